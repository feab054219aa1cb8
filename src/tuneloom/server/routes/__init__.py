"""One module per object family; each exposes `router`."""
