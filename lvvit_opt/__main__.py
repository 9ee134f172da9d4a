"""`python -m lvvit_opt`: the command line (lvvit_opt.cli)."""
from lvvit_opt.cli import main

main()
