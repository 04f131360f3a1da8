"""`booking-gallery`: the county side (gallery receiver, device registry, exports)."""

from __future__ import annotations

import click

from sync import __version__
from sync.county.enroll.cli import ca, enroll_server, tokens
from sync.county.gallery.cli import register_commands
from sync.county.gallery.fleet_cli import fleet


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="booking-gallery")
def main() -> None:
    """County face gallery: receives, verifies, stores and acknowledges booking records."""


register_commands(main)
main.add_command(ca)
main.add_command(tokens)
main.add_command(enroll_server)
main.add_command(fleet)

if __name__ == "__main__":
    main()
