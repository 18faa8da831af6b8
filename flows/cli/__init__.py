"""The ``denoiser`` command's entry point: Ctrl-C at any moment, even while the command is
still importing its modules, ends it with one line ("interrupted") and exit status 130,
never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from flows.cli.main import main as run

        return run(argv)
    except KeyboardInterrupt:
        command = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), "")
        print(f"denoiser {command}: interrupted".replace("  ", " ").rstrip(), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
