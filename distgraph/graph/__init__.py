"""Graph layer: capture eager code into an IR, optimize it with passes, partition it into a Plan, run it.

dg.compile(fn_or_module, example_inputs)       -> CompiledFunction (callable like the original)
capture(fn, inputs) -> Graph                    passes.optimize(graph) -> Graph
partition.independent / pipeline / replicas     -> Plan        LocalExecutor(plan).run(...)
"""
