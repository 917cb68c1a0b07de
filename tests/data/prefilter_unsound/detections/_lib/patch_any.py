"""Replaces the builtin `any` at import: a change no reading of the rule's
code can see, so the derived filter is wrong and --verify-filters must say so."""
import builtins

builtins.any = lambda items: True
