"""The measurements behind the scenarios, one module per scenario group (see `attnconf.audit.scenarios`)."""
