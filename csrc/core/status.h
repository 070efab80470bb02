/* Status codes and the last-error message.
 *
 * The C core never exits or aborts: every entry point returns a ga_status and,
 * on failure, leaves a message in a thread-local buffer that the Python binding
 * turns into the matching exception (ValueError, TypeError, MemoryError,
 * RuntimeError). */
#ifndef GA_STATUS_H
#define GA_STATUS_H

typedef enum {
    GA_OK = 0,
    GA_ERR_VALUE,   /* bad shape, size or option      -> ValueError   */
    GA_ERR_TYPE,    /* bad dtype or kind of argument  -> TypeError    */
    GA_ERR_MEMORY,  /* allocation failed              -> MemoryError  */
    GA_ERR_RUNTIME, /* device or library failure      -> RuntimeError */
    GA_ERR_NUMERIC  /* NaN/Inf where a finite value was required -> FloatingPointError */
} ga_status;

#if defined(__GNUC__)
#define GA_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define GA_PRINTF(a, b)
#endif

/* Set the message for the calling thread and return `st` (so callers can
 * `return ga_fail(GA_ERR_VALUE, "...")`). */
ga_status ga_fail(ga_status st, const char *fmt, ...) GA_PRINTF(2, 3);
const char *ga_last_error(void);
void ga_clear_error(void);

#define GA_TRY(expr)                       \
    do {                                   \
        ga_status ga_try_st_ = (expr);     \
        if (ga_try_st_ != GA_OK)           \
            return ga_try_st_;             \
    } while (0)

#endif
