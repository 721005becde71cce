"""Network pieces of AMAGO as TensorDict modules / tensor modules (no env, replay or training code here)."""
from .babyai_encoder import BabyAITimestepEncoder
from .common import MLP, FFBlock, activation, normalization, symexp, symlog
from .count_heads import CountActorHead, CountDiscreteCritic, CountsBesideEmbedding, CountsPassThrough, count_features
from .distributions import (CONTINUOUS_OUTPUTS, DEFAULT_DISCRETE_CLIP, BetaOutput, DiscreteOutput, MultiBinaryOutput,
                            TanhGaussianOutput, discrete_clip_of)
from .heads import ActorHead, ContinuousCritic, DiscreteCritic, PopArt, TwoHotCritic, gamma_features
from .input_norm import InputNorm
from .policy import AMAGOPolicy
from .timestep import CNNTimestepEncoder, MLPTimestepEncoder
from .trajectory import (FFTrajEncoder, GRUTrajEncoder, IdentityTrajEncoder, LSTMTrajEncoder, MambaTrajEncoder,
                         SigmaReparam, TrajectoryEncoder, TrajectoryEncoderModule, TransformerTrajEncoder,
                         as_sequence_module, encoder_emb_dim, make_trajectory_encoder, register_trajectory_encoder,
                         trajectory_encoder_names)

__all__ = [
    "MLP", "FFBlock", "activation", "normalization", "symexp", "symlog",
    "BetaOutput", "DiscreteOutput", "MultiBinaryOutput", "TanhGaussianOutput", "CONTINUOUS_OUTPUTS",
    "DEFAULT_DISCRETE_CLIP", "discrete_clip_of",
    "ActorHead", "ContinuousCritic", "DiscreteCritic", "PopArt", "TwoHotCritic", "gamma_features",
    "InputNorm", "AMAGOPolicy", "CNNTimestepEncoder", "MLPTimestepEncoder", "BabyAITimestepEncoder",
    "FFTrajEncoder", "GRUTrajEncoder", "IdentityTrajEncoder", "LSTMTrajEncoder", "MambaTrajEncoder",
    "SigmaReparam", "TrajectoryEncoder", "TrajectoryEncoderModule", "TransformerTrajEncoder",
    "make_trajectory_encoder", "register_trajectory_encoder", "trajectory_encoder_names", "as_sequence_module",
    "encoder_emb_dim", "CountActorHead", "CountDiscreteCritic", "CountsBesideEmbedding", "CountsPassThrough",
    "count_features",
]
