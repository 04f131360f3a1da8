"""`python -m appliance.ui serve|users ...`: the UI commands before they are registered in `booking-station`."""

from appliance.ui.cli import main

main(prog_name="python -m appliance.ui")
