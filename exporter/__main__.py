"""`python -m exporter` and the `zoom-qos-exporter` command."""

import sys

from exporter import signals


def main() -> int:
    signals.install_early()  # before the heavy imports: a SIGHUP now must not end the process
    from exporter.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
