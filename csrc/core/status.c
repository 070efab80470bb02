#include "status.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char ga_message[1024];

ga_status ga_fail(ga_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ga_message, sizeof ga_message, fmt, ap);
    va_end(ap);
    return st;
}

const char *ga_last_error(void) { return ga_message; }

void ga_clear_error(void) { ga_message[0] = '\0'; }
