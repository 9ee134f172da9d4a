"""Graph passes (installed as lvvit_opt.passes)."""
