"""ctal_hf: CTAL (cross-modal Transformer for audio and language) for Hugging Face transformers, and the
audio-text cross-modal attention family (pre-trained wav2vec 2.0 + BERT encoders).

Importing the package registers every class of both families with the transformers Auto classes, so
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
from .data.features import CTALFeatureTransform, add_length_column, precompute_features
from .data.iemocap import load_iemocap_folder
from .data.labelled import DataCollatorForAudioTextClassification, prepare_labels
from .data.sources import iter_transcripts, load_librispeech_folder, load_manifest, load_speech_dataset
from .models.audio_text_cma.configuration_audio_text_cma import AudioTextCMAConfig
from .models.audio_text_cma.modeling_audio_text_cma import (
    AudioTextCMAForSequenceClassification,
    AudioTextCMAModel,
    AudioTextCMAModelOutput,
    AudioTextCMAPreTrainedModel,
    AudioTextCMASequenceClassifierOutput,
)
from .models.audio_text_cma.processing_audio_text_cma import AudioTextCMAProcessor
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

AutoConfig.register("audio_text_cma", AudioTextCMAConfig, exist_ok=True)
AutoProcessor.register(AudioTextCMAConfig, AudioTextCMAProcessor, exist_ok=True)
AutoModel.register(AudioTextCMAConfig, AudioTextCMAModel, exist_ok=True)
AutoModelForSequenceClassification.register(AudioTextCMAConfig, AudioTextCMAForSequenceClassification, exist_ok=True)

__all__ = [
    "CTAL_PRESETS",
    "AudioDecodeError",
    "AudioTextCMAConfig",
    "AudioTextCMAForSequenceClassification",
    "AudioTextCMAModel",
    "AudioTextCMAModelOutput",
    "AudioTextCMAPreTrainedModel",
    "AudioTextCMAProcessor",
    "AudioTextCMASequenceClassifierOutput",
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
    "DataCollatorForAudioTextClassification",
    "DataCollatorForCTALPretraining",
    "add_length_column",
    "audio_num_samples",
    "iter_transcripts",
    "load_audio",
    "load_iemocap_folder",
    "load_librispeech_folder",
    "load_manifest",
    "load_speech_dataset",
    "precompute_features",
    "prepare_labels",
    "train_ctal_tokenizer",
]
