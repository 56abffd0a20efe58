"""The study: what each notebook shows, as functions that return tables (DataFrames) and images.

Notebooks stay thin: they take their :class:`Settings` from :func:`settings`, call the functions
here, plot, and write their numbers with :func:`write_metrics`. Everything is seeded; every number
carries the sample count it rests on and a 95 % interval from the paired resampling of maps and reference
images (``metrics.resampling``).

* :mod:`.settings` -- profiles and their defaults (one table);
* :mod:`.context` -- what a kernel loads once (pipelines, datasets, segmenters, priors);
* :mod:`.evaluation` -- mIoU / accuracy, FD-toy or FID, KID (and the toy profiles' second judge), scored
  together for the settings of one table, with paired intervals;
* :mod:`.experiments` -- Table 1, Fig. 3, Fig. 8, Table 3, Table 2;
* :mod:`.global_factors` -- notebook 08's priors that keep global factors, in the same harness;
* :mod:`.transfer` -- notebook 10: priors of one regime on a model of another;
* :mod:`.schedules` -- notebook 09: the noise schedule's signal leak and zero terminal SNR;
* :mod:`.output` -- figures, tables and metrics files;
* :mod:`.method` -- the method in one picture (label map, prior draw, Eq. 6, DDIM, image);
* :mod:`.prior_figures` -- the priors' statistics: signed maps centred at 0, the joint prior's fallback cells.

Profiles: ``toy`` (the embedded default: toy-city and the committed toy zoo, FD-toy in place of
FID), ``toy-gv`` (toy-city with strong per-image global variation), ``camvid`` (real photographs on
the CPU) and the real-scale ``cityscapes`` / ``ade20k`` (a pipeline folder, a dataset root and a
segmenter; FID through pytorch-fid's Inception).
"""
from ..data import images_labels, to_float, to_uint8
from ..metrics import frechet_distance_of
from .context import (CONTEXT, build_priors, eval_set, feature_extractor, load_data, load_pipeline, load_segmenter,
                      training_facts)
from .evaluation import (COLUMNS, Comparison, column_label, frame_block, map_agreement, nearest_training,
                         real_reference, reference_features, score, second_judge)
from .experiments import (PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE3, TRAINING_SEEDS, comparison_table,
                          diversity_study, diversity_verdict, generate, global_brightness, mismatch_records,
                          mismatch_study, mu_sweep, prior_comparison, prior_summary, seed_study, trajectory)
from .method import method_figure, method_parts
from .prior_figures import joint_counts_figure, signed_heatmap, spatial_prior_figure
from .output import (colorized, compact, git_commit, image_grid, label_legend, legend_of, read_metrics, readable,
                     records, save_figure, save_table, with_ci, write_metrics)
from .settings import (COMPANIONS, NOTEBOOKS, PRIOR_KINDS, PROFILE_PARAMS, PROFILES, QUICK, SMOKE, Settings,
                       comparison_profiles, parameters, quick_counts, settings)

__all__ = [
    "images_labels", "to_float", "to_uint8",
    "CONTEXT", "build_priors", "eval_set", "feature_extractor", "load_data", "load_pipeline", "load_segmenter",
    "training_facts",
    "frechet_distance_of", "COLUMNS", "Comparison", "column_label", "frame_block", "map_agreement", "nearest_training",
    "real_reference", "reference_features", "score", "second_judge",
    "PAPER_TABLE1", "PAPER_TABLE2", "PAPER_TABLE3", "TRAINING_SEEDS", "comparison_table", "diversity_study",
    "diversity_verdict", "generate", "global_brightness", "mismatch_records", "mismatch_study", "mu_sweep",
    "prior_comparison",
    "prior_summary", "seed_study", "trajectory",
    "method_figure", "method_parts",
    "joint_counts_figure", "signed_heatmap", "spatial_prior_figure",
    "colorized", "compact", "git_commit", "image_grid", "label_legend", "legend_of", "read_metrics", "readable",
    "records", "save_figure", "save_table", "with_ci", "write_metrics",
    "COMPANIONS", "NOTEBOOKS", "PRIOR_KINDS", "PROFILE_PARAMS", "PROFILES", "QUICK", "SMOKE", "Settings",
    "comparison_profiles", "parameters", "quick_counts", "settings",
]
