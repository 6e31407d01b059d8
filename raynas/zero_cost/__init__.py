"""Zero-cost proxies: scores of untrained networks (``proxies``), the scorer searchers consume
(``scorer``), the ``zero_cost`` evaluator (``evaluator``) and Parquet proxy tables (``table``)."""
