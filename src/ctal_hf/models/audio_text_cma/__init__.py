"""Audio-text cross-modal attention (Krishna D N et al., 2021): a pre-trained wav2vec 2.0-style speech encoder and a
pre-trained BERT-style text encoder joined by bidirectional cross-modal attention and statistics pooling."""
