"""ctal_hf: CTAL (cross-modal Transformer for audio and language) for Hugging Face transformers.

Importing the package registers every CTAL class with the transformers Auto classes, so
`AutoModel.from_pretrained(<folder>)` works offline without `trust_remote_code`, and the
`pipeline("audio-text-classification")` task, and the "blockwise" attention implementation
(`ctal_hf.blockwise_attention`: training memory linear in the audio length, attention dropout kept).
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoProcessor,
    AutoTokenizer,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .audio import AudioDecodeError, audio_num_samples, load_audio
from .blockwise_attention import BLOCKWISE_ATTENTION
from .data.collator import DataCollatorForCTALPretraining
from .data.sources import (
    CTALFeatureTransform,
    add_length_column,
    load_librispeech_folder,
    load_manifest,
    load_speech_dataset,
    precompute_features,
)
from .models.ctal.configuration_ctal import CTAL_PRESETS, CTALConfig
from .models.ctal.feature_extraction_ctal import CTALFeatureExtractor
from .models.ctal.modeling_ctal import (
    CTALForPreTraining,
    CTALForPreTrainingOutput,
    CTALForSequenceClassification,
    CTALModel,
    CTALModelOutput,
    CTALPreTrainedModel,
    CTALSequenceClassifierOutput,
)
from .models.ctal.processing_ctal import CTALProcessor
from .models.ctal.tokenization_ctal import CTALTokenizer, train_ctal_tokenizer
from .pipelines.audio_text_classification import AudioTextClassificationPipeline


__version__ = "0.1.0"

AutoConfig.register("ctal", CTALConfig, exist_ok=True)
AutoFeatureExtractor.register(CTALConfig, CTALFeatureExtractor, exist_ok=True)
AutoTokenizer.register(CTALConfig, tokenizer_class=CTALTokenizer, exist_ok=True)
AutoProcessor.register(CTALConfig, CTALProcessor, exist_ok=True)
AutoModel.register(CTALConfig, CTALModel, exist_ok=True)
AutoModelForPreTraining.register(CTALConfig, CTALForPreTraining, exist_ok=True)
AutoModelForSequenceClassification.register(CTALConfig, CTALForSequenceClassification, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    "audio-text-classification",
    pipeline_class=AudioTextClassificationPipeline,
    pt_model=AutoModelForSequenceClassification,
    type="multimodal",
)

__all__ = [
    "CTAL_PRESETS",
    "AudioDecodeError",
    "BLOCKWISE_ATTENTION",
    "AudioTextClassificationPipeline",
    "CTALConfig",
    "CTALFeatureExtractor",
    "CTALFeatureTransform",
    "CTALForPreTraining",
    "CTALForPreTrainingOutput",
    "CTALForSequenceClassification",
    "CTALModel",
    "CTALModelOutput",
    "CTALPreTrainedModel",
    "CTALProcessor",
    "CTALSequenceClassifierOutput",
    "CTALTokenizer",
    "DataCollatorForCTALPretraining",
    "add_length_column",
    "audio_num_samples",
    "load_audio",
    "load_librispeech_folder",
    "load_manifest",
    "load_speech_dataset",
    "precompute_features",
    "train_ctal_tokenizer",
]
