"""`python -m lra.data.pathfinder_generator --compare REAL_DIR`."""

from lra.data.pathfinder_generator.compare import main

main()
