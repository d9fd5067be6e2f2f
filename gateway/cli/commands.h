/* Internal to the `tollgate` CLI: the prototypes of every command in commands.def. */
#ifndef TG_CLI_COMMANDS_H
#define TG_CLI_COMMANDS_H

#define CLI_CMD(name, fn, usage, summary) int fn(int argc, char **argv);
#include "cli/commands.def"
#undef CLI_CMD

#endif
