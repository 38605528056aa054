"""MedKLIP: a knowledge-enhanced chest X-ray vision-language model, as a plain library.

The library trains, evaluates and extracts labels from its own CLI (`medklip --help`); the Prefect tasks and flows in
`tasks/` and `flows/` import it, never the reverse.
"""

__version__ = "0.1.0"
