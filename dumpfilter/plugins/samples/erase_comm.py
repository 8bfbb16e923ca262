"""Erase every task's command name (``task_struct.comm``): the Python counterpart of makedumpfile's
``extensions/erase_sample.c``.

    pydumpfile -l -d 31 --extension erase_comm VMCORE DUMPFILE

Each task's 16-byte ``comm`` becomes 'X' in the written pages; eraseinfo gets one
``erase task.comm size 16`` line per task.
"""
API_VERSION = 1
NAME = "erase_comm"
SYMBOLS = ["init_task"]
TYPES = ["struct task_struct"]


def run(ctx):
    off = ctx.offsetof("struct task_struct", "comm")
    size = ctx.type("struct task_struct").member("comm")[1].type.size
    n = 0
    for task in ctx.tasks():
        ctx.erase(task + off, size, "task.comm")
        n += 1
    ctx.log(f"erased the comm of {n} tasks")
