/* core.percent_encode, core.has_control and core.expand (text.c). */
#ifndef LIMITRY_TEXT_H
#define LIMITRY_TEXT_H

#include "lua.h"

#include "core.h"

/* Sets core.percent_encode, core.has_control and core.expand on the module table at the top of the stack. */
LM_HIDDEN void lm_text_register(lua_State *L);

#endif
