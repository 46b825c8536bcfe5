"""The `dtconnector` command line (`cli.py`): a dispatcher that imports each subcommand's
module (local_receiver.commands, emulator.cli, dtcloud.cli) only when that subcommand runs."""
