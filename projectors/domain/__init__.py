"""Pure rules of the read models: what each event changes, with no I/O."""
