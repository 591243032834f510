"""`python -m synth.cli`: the `synth` command."""

from synth.cli import main

if __name__ == "__main__":
    main()
