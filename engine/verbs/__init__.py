"""One module per Plivo XML verb: each holds its schema (attributes, children) beside its behaviour.

`engine.xml` turns a document into verbs through `REGISTRY` (tag -> Verb subclass); the interpreter runs them and
never knows which verb it is running.
"""
