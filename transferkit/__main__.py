"""``python -m transferkit``: the same command line as ``transferkit``."""

from transferkit.cli import main

if __name__ == "__main__":
    main(prog_name="transferkit")
