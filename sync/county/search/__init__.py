"""County face search: an index derived from the gallery store, two engines behind one interface, the CLI."""
