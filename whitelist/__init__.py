"""CANN transpose whitelist tools (installed as lvvit_opt.whitelist)."""
