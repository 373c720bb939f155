"""Running workflows: run directories, step rendering and output collection, the scheduler."""
