"""The platform server: a FastAPI app over `tuneloom.store` and the core engine."""
