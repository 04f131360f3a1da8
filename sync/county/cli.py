"""`booking-gallery`: the county side (gallery receiver, device registry, exports)."""

from __future__ import annotations

from pathlib import Path

import click

from sync import __version__
from sync.cli_conventions import RootGroup
from sync.county.config import CONFIG_ENV, DEFAULT_CONFIG, CountyConfigError, load_county_config
from sync.county.console.cli import add_audit_list, serve_cmd, users_group
from sync.county.enroll.cli import ca, enroll_server, tokens
from sync.county.gallery.audit_cli import audit
from sync.county.gallery.cli import register_commands
from sync.county.gallery.fleet_cli import fleet
from sync.county.gallery.status_cli import status_cmd
from sync.county.intake.cli import import_cmd, purge_cmd
from sync.county.search.search_cli import index_group, search_cmd

EXIT_SETUP = 2


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="booking-gallery")
@click.option(
    "--config",
    "config_path",
    default=None,
    envvar=CONFIG_ENV,
    show_envvar=True,
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"county.toml: [gallery] db, [ca] dir, [export] folder, and the receiver's [broker]/[gallery] settings "
    f"(default {DEFAULT_CONFIG}, when it exists). A command-line flag or its environment variable wins over it.",
)
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """County face gallery: receives, verifies, stores and acknowledges booking records.

    \b
    Every command reads county.toml (--config FILE, $BOOKING_GALLERY_CONFIG,
    else /etc/booking-gallery/county.toml if it exists), e.g.:
      [gallery]
      db = "/var/lib/booking-gallery/gallery.db"   # or postgresql://...
      [ca]
      dir = "/var/lib/booking-enroll"
      [export]
      folder = "/var/lib/booking-gallery/eft"
    Precedence: flag > environment variable > county.toml > built-in default.
    """
    try:
        ctx.obj = load_county_config(config_path)
    except CountyConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(EXIT_SETUP)


register_commands(main)
main.add_command(ca)
main.add_command(tokens)
main.add_command(enroll_server)
main.add_command(fleet)
main.add_command(import_cmd)
main.add_command(purge_cmd)
main.add_command(search_cmd)
main.add_command(index_group)
main.add_command(serve_cmd)
main.add_command(users_group)
main.add_command(audit)
add_audit_list(main)
main.add_command(status_cmd)

if __name__ == "__main__":
    main()
