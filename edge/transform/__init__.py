"""Transforms: the pure pipeline (`header`, `plan`, `steps`, `render`) and where it runs
(`pool`: lanes, budgets and deadlines over `procpool`'s worker processes)."""
