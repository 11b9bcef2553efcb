"""The Long Range Arena benchmark: tasks, data, Lightning modules, results records."""
