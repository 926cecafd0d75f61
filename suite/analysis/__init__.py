"""Reading the night in the morning: records as frames (``frames``), their statistics (``stats``), units
(``units``), tables (``tables``), the sections that compare and report share (``compare``), the report and its
plots (``report``, ``plots``), the published LRA results (``published``). Of ``suite.run`` only the records reader
is used. The names below are what the command line needs without importing pandas or scipy."""

DEFAULT_BASELINE = "softmax"
FORMATS = ("rich", "markdown", "csv")
REFERENCES = ("lra",)
