"""Analysis tools that work through TransformerLens hooks on any HookedTransformer."""

from wrapperlens.analysis.logit_metrics import *  # noqa: F401,F403
from wrapperlens.analysis.run_pair import *  # noqa: F401,F403
from wrapperlens.analysis.patching import *  # noqa: F401,F403
from wrapperlens.analysis.positions import *  # noqa: F401,F403
from wrapperlens.analysis.pruning import *  # noqa: F401,F403
from wrapperlens.analysis.ablation import *  # noqa: F401,F403
from wrapperlens.analysis.residual_points import *  # noqa: F401,F403
from wrapperlens.analysis.linear_probes import *  # noqa: F401,F403
from wrapperlens.analysis.probing import *  # noqa: F401,F403
from wrapperlens.analysis.attention_views import *  # noqa: F401,F403
from wrapperlens.analysis.attribution import *  # noqa: F401,F403
