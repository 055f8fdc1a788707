"""``python -m effv2birds ...`` (what ``accelerate launch -m effv2birds train`` runs)."""

from effv2birds.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
