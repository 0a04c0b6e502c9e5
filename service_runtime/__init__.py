"""What every process of the system shares at run time: settings, tokens, problems, logs."""
