"""Benchmarks a core release publishes (RxRx3-core and RxRx1 semantics, EFAAR_benchmarking-compatible), evaluated
fast, vectorised and fully seeded.

Public API::

    load_definition(id_or_path) -> dict           list_definitions() -> list[str]
    definition_checksum(defn) -> str
    evaluate(definition, embeddings, metadata, truth) -> dict
    evaluate_map(definition, map_frame, truth) -> dict
    evaluate_files(benchmark_id, embeddings_path, metadata_path, truth_paths, out_path, map_path=None) -> dict
    compare_results(published, rerun, tolerance=None) -> list[str]
    read_relationships(path) -> DataFrame[entity1, entity2]
    read_compound_gene(path) -> DataFrame
"""

from rxcurate.benchmarks.definitions import (
    DEFINITIONS_DIR,
    definition_checksum,
    list_definitions,
    load_definition,
    validate_definition,
)
from rxcurate.benchmarks.postprocess import (
    PerturbationMap,
    centerscale,
    pca_centerscale_on_controls,
    postprocess,
    tvn_on_controls,
)
from rxcurate.benchmarks.readers import read_compound_gene, read_relationships
from rxcurate.benchmarks.runner import (
    compare_results,
    evaluate,
    evaluate_files,
    evaluate_map,
    library_versions,
    validate_results,
)

__all__ = [
    "DEFINITIONS_DIR",
    "PerturbationMap",
    "centerscale",
    "compare_results",
    "definition_checksum",
    "evaluate",
    "evaluate_files",
    "evaluate_map",
    "library_versions",
    "list_definitions",
    "load_definition",
    "pca_centerscale_on_controls",
    "postprocess",
    "read_compound_gene",
    "read_relationships",
    "tvn_on_controls",
    "validate_definition",
    "validate_results",
]
