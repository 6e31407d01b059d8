"""The run and its assembly: from a validated config to a finished search.

- ``config``: the experiment YAML, parsed and checked before anything starts.
- ``runner``: builds space, searcher(s) and evaluator, drives Ray Tune, records in MLflow.
- ``members``: the searcher runs of a portfolio. ``placement``: nodes, actor reuse, stores.
- ``schedulers``: Tune trial schedulers by name. ``progress``: the console progress line.
- ``localray``: the Ray node of a run without ``--address``, on loopback. ``stop``: Ctrl-C and
  SIGTERM, one stop path and its exit codes.
"""
