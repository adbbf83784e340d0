"""The stage layer: one module per stage, each the stage's units of work, engine-agnostic.

    extract -> filter_text -> download -> dedup -> annotate [-> semdedup] -> select; report over them all

A stage module reads a shard, calls filters/ and models/, and writes kept + rejected rows through the
stage contract (curation.stage). It sits above the core (curation/*.py), filters/ and models/, and below
jobs/, which distributes its units with Spark. Stage modules never import one another; what two stages
share lives below them (the core, curation.lifecycle) or beside them as a shared module of this layer:
``config`` (the run config, which gathers every layer's rules) and ``selection`` (the preset query engine
select and the report share).
"""
