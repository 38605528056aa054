"""The code MLflow stores with each logged MedKLIP model (models-from-code): loading runs this file.

It builds `medklip.tracking.MedKLIPPyfunc`, which reads the model's safetensors weights; no object is pickled.
The environment that loads the model needs `medklip` installed.
"""

from medklip.tracking import set_pyfunc_model

set_pyfunc_model()
