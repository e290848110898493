"""ctal_hf: CTAL (cross-modal Transformer for audio and language) for Hugging Face transformers.

Importing the package registers every CTAL class with the transformers Auto classes, so
`AutoModel.from_pretrained(<folder>)` works offline without `trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
)

from .configuration_ctal import CTAL_PRESETS, CTALConfig
from .modeling_ctal import (
    CTALForPreTraining,
    CTALForPreTrainingOutput,
    CTALForSequenceClassification,
    CTALModel,
    CTALModelOutput,
    CTALPreTrainedModel,
    CTALSequenceClassifierOutput,
)


__version__ = "0.1.0"

AutoConfig.register("ctal", CTALConfig, exist_ok=True)
AutoModel.register(CTALConfig, CTALModel, exist_ok=True)
AutoModelForPreTraining.register(CTALConfig, CTALForPreTraining, exist_ok=True)
AutoModelForSequenceClassification.register(CTALConfig, CTALForSequenceClassification, exist_ok=True)

__all__ = [
    "CTAL_PRESETS",
    "CTALConfig",
    "CTALForPreTraining",
    "CTALForPreTrainingOutput",
    "CTALForSequenceClassification",
    "CTALModel",
    "CTALModelOutput",
    "CTALPreTrainedModel",
    "CTALSequenceClassifierOutput",
]
