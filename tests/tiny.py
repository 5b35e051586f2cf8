"""Tiny random Hugging Face configs for parity tests, built in the test process (nothing downloaded)."""

VISION = dict(
    model_type="clip_vision_model",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=28,
    patch_size=7,
    projection_dim=24,
    hidden_act="quick_gelu",
)

TEXT = {
    "llama_gqa": dict(
        model_type="llama",
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        vocab_size=160,
        max_position_embeddings=256,
        rope_theta=10000.0,
    ),
    "llama_linear_rope": dict(
        model_type="llama",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=160,
        rope_scaling={"rope_type": "linear", "factor": 2.0},
        attention_bias=True,
        mlp_bias=True,
    ),
    "qwen2": dict(
        model_type="qwen2",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=160,
        rope_theta=1000000.0,
    ),
    "smollm2_tied": dict(
        model_type="llama",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        vocab_size=160,
        tie_word_embeddings=True,
        rope_theta=100000.0,
    ),
    "mistral_window": dict(
        model_type="mistral",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=160,
        sliding_window=7,
        head_dim=16,
    ),
}

IMAGE_TOKEN = 5
PAD = 0
EOS_NEVER = None
