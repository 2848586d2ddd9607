"""Task evaluations: synthetic/corpus tasks (`tasks`), k-shot / CoT / self-consistency runs (`run`)."""
from scaling.tasks import REGISTRY, Example, Task, get_task, split_of

__all__ = ["REGISTRY", "Example", "Task", "get_task", "split_of"]
