"""The study layer: a grid YAML -> typed stage configs -> notebook jobs -> results.

==============  ================================================================================
module          what it does
==============  ================================================================================
loader          YAML with line marks; duplicate keys refused
checks          values checked against typed dataclass fields; errors name file, line, key path
schema          the stage configs and grid sections: the one place a parameter is declared
expand          grid -> jobs with dependencies
cache           job hash (config + upstream outputs + weights + the savfi_core code it runs), records
code            which savfi_core files a notebook runs: the import graph of its code
runner          graphlib.TopologicalSorter over any concurrent.futures.Executor
execute         one job = one papermill run in a subprocess
stages          what each notebook does (run_pretrain, run_meta_train, run_evaluate, run_report)
protocols       baseline, re-trained, fine-tune and meta as objects with adapt/predict
==============  ================================================================================
"""
