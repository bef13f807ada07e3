/* phast.c -- C client of `phast serve`; the API reference is phast.h, the wire format
 * docs/protocol.md.
 *
 * Nothing from the server is trusted: a reply is at most PHAST_MAX_REPLY bytes of JSON, parsed
 * into a fixed token array (bounded depth), every field is checked for type and range before
 * use, plane offsets are checked against the slot size, and a slot's memfd is mapped only if
 * it is sealed against shrinking and at least as large as announced (a file shrunk under a
 * mapping would SIGBUS this process). Unexpected descriptors are closed.
 */
#define _GNU_SOURCE
#include "phast.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PHAST_VERSION "phast-serve-1"
#define PHAST_MAX_REPLY (64 * 1024)  /* the server's replies are small; larger is hostile */
#define MAX_TOKENS 512
#define MAX_DEPTH 8
#define MAX_SLOTS 256
#define MAX_CLIPS 64
#define MAX_EVENTS 32
#define MAX_FDS 4
#define MAX_SLOT_SIZE ((uint64_t)1 << 36)  /* 64 GiB: far above any frame */
#define MAX_PATH_BYTES 4096
#define REQUEST_CAP (8 * MAX_PATH_BYTES)
#define REQ_HEAD 8  /* c->req starts with the record header, then the JSON */

extern char **environ;

/* ---- JSON: a bounded, validating tokenizer ------------------------------------------------ */

enum { J_OBJ, J_ARR, J_STR, J_NUM, J_TRUE, J_FALSE, J_NULL };

typedef struct {
    int type;
    int start, end; /* for strings: the bytes between the quotes */
    int next;       /* index of the first token after this value's subtree */
    int count;      /* members (objects: pairs) or elements */
} jtok;

typedef struct {
    const char *s;
    int len, pos, nt;
    jtok *t;
} jparser;

static void j_ws(jparser *p) {
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static int j_alloc(jparser *p, int type) {
    if (p->nt >= MAX_TOKENS) return -1;
    jtok *t = &p->t[p->nt];
    t->type = type;
    t->start = p->pos;
    t->end = p->pos;
    t->next = 0;
    t->count = 0;
    return p->nt++;
}

static int is_hex(char ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static int j_string(jparser *p) {
    int k = j_alloc(p, J_STR);
    if (k < 0) return -1;
    p->pos++; /* opening quote */
    p->t[k].start = p->pos;
    while (p->pos < p->len) {
        unsigned char ch = (unsigned char)p->s[p->pos];
        if (ch == '"') {
            p->t[k].end = p->pos++;
            p->t[k].next = p->nt;
            return 0;
        }
        if (ch < 0x20) return -1;
        if (ch == '\\') {
            if (++p->pos >= p->len) return -1;
            char e = p->s[p->pos];
            if (e == 'u') {
                if (p->pos + 4 >= p->len) return -1;
                for (int i = 1; i <= 4; i++)
                    if (!is_hex(p->s[p->pos + i])) return -1;
                p->pos += 4;
            } else if (!strchr("\"\\/bfnrt", e) || e == '\0') {
                return -1;
            }
        }
        p->pos++;
    }
    return -1;
}

static int j_digits(jparser *p) {
    int n = 0;
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
        p->pos++;
        n++;
    }
    return n;
}

static int j_number(jparser *p) {
    int k = j_alloc(p, J_NUM);
    if (k < 0) return -1;
    if (p->s[p->pos] == '-') p->pos++;
    if (p->pos < p->len && p->s[p->pos] == '0') p->pos++;
    else if (j_digits(p) == 0) return -1;
    if (p->pos < p->len && p->s[p->pos] == '.') {
        p->pos++;
        if (j_digits(p) == 0) return -1;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (j_digits(p) == 0) return -1;
    }
    p->t[k].end = p->pos;
    p->t[k].next = p->nt;
    return p->t[k].end - p->t[k].start > 40 ? -1 : 0;
}

static int j_literal(jparser *p, const char *word, int type) {
    size_t n = strlen(word);
    if ((size_t)(p->len - p->pos) < n || memcmp(p->s + p->pos, word, n) != 0) return -1;
    int k = j_alloc(p, type);
    if (k < 0) return -1;
    p->pos += (int)n;
    p->t[k].end = p->pos;
    p->t[k].next = p->nt;
    return 0;
}

static int j_value(jparser *p, int depth) {
    j_ws(p);
    if (p->pos >= p->len || depth > MAX_DEPTH) return -1;
    char ch = p->s[p->pos];
    if (ch == '{' || ch == '[') {
        int k = j_alloc(p, ch == '{' ? J_OBJ : J_ARR);
        if (k < 0) return -1;
        char close = ch == '{' ? '}' : ']';
        p->pos++;
        j_ws(p);
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
        } else {
            for (;;) {
                if (ch == '{') {
                    j_ws(p);
                    if (p->pos >= p->len || p->s[p->pos] != '"' || j_string(p) < 0) return -1;
                    j_ws(p);
                    if (p->pos >= p->len || p->s[p->pos] != ':') return -1;
                    p->pos++;
                }
                if (j_value(p, depth + 1) < 0) return -1;
                p->t[k].count++;
                j_ws(p);
                if (p->pos >= p->len) return -1;
                if (p->s[p->pos] == ',') {
                    p->pos++;
                    continue;
                }
                if (p->s[p->pos] != close) return -1;
                p->pos++;
                break;
            }
        }
        p->t[k].end = p->pos;
        p->t[k].next = p->nt;
        return 0;
    }
    if (ch == '"') return j_string(p);
    if (ch == '-' || (ch >= '0' && ch <= '9')) return j_number(p);
    if (ch == 't') return j_literal(p, "true", J_TRUE);
    if (ch == 'f') return j_literal(p, "false", J_FALSE);
    if (ch == 'n') return j_literal(p, "null", J_NULL);
    return -1;
}

/* Parse one JSON object filling the whole of s[0..len). */
static int j_parse(jparser *p, jtok *toks, const char *s, int len) {
    p->s = s;
    p->len = len;
    p->pos = 0;
    p->nt = 0;
    p->t = toks;
    if (j_value(p, 0) < 0 || toks[0].type != J_OBJ) return -1;
    j_ws(p);
    return p->pos == p->len ? 0 : -1;
}

/* Value token of `key` in object `obj`, or -1. Keys with escapes never match. */
static int j_get(const jparser *p, int obj, const char *key) {
    if (obj < 0 || obj >= p->nt || p->t[obj].type != J_OBJ) return -1;
    size_t n = strlen(key);
    int k = obj + 1;
    for (int i = 0; i < p->t[obj].count; i++) {
        const jtok *kt = &p->t[k];
        if ((size_t)(kt->end - kt->start) == n && memcmp(p->s + kt->start, key, n) == 0)
            return k + 1;
        k = p->t[k + 1].next;
    }
    return -1;
}

/* Element `i` of array `arr`, or -1. */
static int j_at(const jparser *p, int arr, int i) {
    if (arr < 0 || p->t[arr].type != J_ARR || i < 0 || i >= p->t[arr].count) return -1;
    int k = arr + 1;
    while (i-- > 0) k = p->t[k].next;
    return k;
}

static int j_int(const jparser *p, int k, int64_t lo, int64_t hi, int64_t *out) {
    if (k < 0 || p->t[k].type != J_NUM) return -1;
    const char *s = p->s + p->t[k].start;
    int n = p->t[k].end - p->t[k].start, i = 0, neg = 0;
    if (s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i >= n) return -1;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1; /* a fraction or an exponent: not an int */
        if (v > (UINT64_MAX - 9) / 10) return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX) return -1;
    int64_t x = neg ? -(int64_t)v : (int64_t)v;
    if (x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

/* A number in the C locale (the host's may use a decimal comma). */
static int j_double(const jparser *p, int k, locale_t cloc, double *out) {
    if (k < 0 || p->t[k].type != J_NUM) return -1;
    char num[48];
    snprintf(num, sizeof num, "%.*s", p->t[k].end - p->t[k].start, p->s + p->t[k].start);
    *out = strtod_l(num, NULL, cloc);
    return 0;
}

static int j_bool(const jparser *p, int k, int *out) {
    if (k < 0 || (p->t[k].type != J_TRUE && p->t[k].type != J_FALSE)) return -1;
    *out = p->t[k].type == J_TRUE;
    return 0;
}

/* Unescaped string into dst (truncated to cap-1 bytes, always terminated). */
static int j_str(const jparser *p, int k, char *dst, size_t cap) {
    if (k < 0 || p->t[k].type != J_STR || cap == 0) return -1;
    size_t o = 0;
    for (int i = p->t[k].start; i < p->t[k].end && o + 1 < cap; i++) {
        char ch = p->s[i];
        if (ch == '\\') {
            char e = p->s[++i];
            if (e == 'u') {
                unsigned cp = (unsigned)strtoul((char[5]){p->s[i + 1], p->s[i + 2], p->s[i + 3],
                                                          p->s[i + 4], 0}, NULL, 16);
                i += 4;
                if (cp < 0x80) {
                    dst[o++] = (char)(cp ? cp : '?');
                } else if (cp < 0x800 && o + 2 < cap) {
                    dst[o++] = (char)(0xC0 | (cp >> 6));
                    dst[o++] = (char)(0x80 | (cp & 0x3F));
                } else if (o + 3 < cap) {
                    dst[o++] = (char)(0xE0 | (cp >> 12));
                    dst[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    dst[o++] = (char)(0x80 | (cp & 0x3F));
                } else {
                    break;
                }
                continue;
            }
            ch = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'b' ? '\b'
               : e == 'f' ? '\f' : e;
        }
        dst[o++] = ch;
    }
    dst[o] = '\0';
    return 0;
}

/* ---- the client --------------------------------------------------------------------------- */

typedef struct {
    uint32_t id;       /* wire id; 0 = not named by the current connection */
    const uint8_t *addr;
    size_t size;
    int refs;          /* one for the server's name, one per frame */
} slot_t;

typedef struct {
    int used;
    int64_t handle;    /* the server's handle; -1 while it could not be reopened */
    char *path;
    int stream, proxies;
    char backend[64], budget[32];
} clip_t;

struct phast_client {
    pthread_mutex_t mu;
    int fd;            /* -1 when the connection is broken */
    pid_t child;       /* spawned server, 0 when connected */
    char **argv;       /* spawn command (NULL-terminated, owned) */
    char *path;        /* connect path */
    int server_pid, restarts;
    unsigned generation;
    double timeout;
    int64_t next_id;
    locale_t cloc;
    slot_t slots[MAX_SLOTS];
    clip_t clips[MAX_CLIPS];
    phast_event events[MAX_EVENTS];
    int ev_head, ev_count;
    int fds[MAX_FDS], nfds;  /* descriptors that came with the last reply */
    char err[512];
    char reply[PHAST_MAX_REPLY + 1];
    jtok toks[MAX_TOKENS];
    jparser jp;
    char req[REQUEST_CAP];
};

static const struct {
    const char *name;
    int code;
} ERROR_NAMES[] = {
    {"INVALID", PHAST_E_INVALID},       {"BAD_REQUEST", PHAST_E_INVALID},
    {"VERSION", PHAST_E_VERSION},       {"PERMISSION", PHAST_E_PERMISSION},
    {"NOT_FOUND", PHAST_E_NOT_FOUND},   {"NO_VIDEO", PHAST_E_MEDIA},
    {"UNSUPPORTED", PHAST_E_MEDIA},     {"MEDIA", PHAST_E_MEDIA},
    {"DECODE", PHAST_E_DECODE},         {"OUT_OF_RANGE", PHAST_E_OUT_OF_RANGE},
    {"QUARANTINED", PHAST_E_QUARANTINED}, {"LIMIT", PHAST_E_LIMIT},
    {"NO_CLIP", PHAST_E_NO_CLIP},       {"BACKEND", PHAST_E_BACKEND},
    {"WORKER", PHAST_E_WORKER},         {"INTERNAL", PHAST_E_INTERNAL},
};

const char *phast_strerror(int code) {
    switch (code) {
    case PHAST_OK: return "success";
    case PHAST_E_INVALID: return "invalid argument";
    case PHAST_E_IO: return "connection to the server failed";
    case PHAST_E_PROTOCOL: return "the server broke the protocol";
    case PHAST_E_VERSION: return "the server speaks another protocol version";
    case PHAST_E_PERMISSION: return "the server refused this user";
    case PHAST_E_NOT_FOUND: return "no such file";
    case PHAST_E_MEDIA: return "not a usable video";
    case PHAST_E_DECODE: return "the frame cannot be decoded";
    case PHAST_E_OUT_OF_RANGE: return "no such frame";
    case PHAST_E_QUARANTINED: return "the frame is quarantined (it crashed decoders)";
    case PHAST_E_LIMIT: return "too many leased frames or open clips";
    case PHAST_E_NO_CLIP: return "no such clip";
    case PHAST_E_BACKEND: return "backend not found or unavailable";
    case PHAST_E_WORKER: return "a decoder worker failed";
    case PHAST_E_INTERNAL: return "internal server error";
    case PHAST_E_NOMEM: return "out of memory";
    case PHAST_E_TIMEOUT: return "the server did not answer in time";
    case PHAST_E_SPAWN: return "the server could not be started";
    default: return "unknown error";
    }
}

static int fail(phast_client *c, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return code;
}

/* Why the last phast_spawn()/phast_connect() on this thread failed (there is no client). */
static _Thread_local char create_err[512];

const char *phast_errmsg(const phast_client *c) {
    return c ? c->err : create_err;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void close_reply_fds(phast_client *c) {
    for (int i = 0; i < c->nfds; i++) close(c->fds[i]);
    c->nfds = 0;
}

/* -- slots -- */

static void slot_unref(phast_client *c, int i) {
    slot_t *s = &c->slots[i];
    if (--s->refs == 0) {
        munmap((void *)s->addr, s->size);
        memset(s, 0, sizeof *s);
    }
}

static int slot_find(const phast_client *c, uint32_t id) {
    for (int i = 0; i < MAX_SLOTS; i++)
        if (c->slots[i].refs > 0 && c->slots[i].id == id) return i;
    return -1;
}

static void slot_drop(phast_client *c, uint32_t id) {
    int i = slot_find(c, id);
    if (i >= 0) {
        c->slots[i].id = 0;
        slot_unref(c, i);
    }
}

static void slots_forget_names(phast_client *c) {
    for (int i = 0; i < MAX_SLOTS; i++)
        if (c->slots[i].refs > 0 && c->slots[i].id != 0) {
            c->slots[i].id = 0;
            slot_unref(c, i);
        }
}

/* Map a slot's descriptor after checking it cannot SIGBUS us; the descriptor is consumed. */
static int slot_map(phast_client *c, uint32_t id, uint64_t size, int fd) {
    struct stat st;
    int seals = fcntl(fd, F_GET_SEALS);
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size < size ||
        seals < 0 || !(seals & F_SEAL_SHRINK)) {
        close(fd);
        return fail(c, PHAST_E_PROTOCOL, "slot %u: not a sealed memfd of %llu bytes", id,
                    (unsigned long long)size);
    }
    int free_i = -1;
    for (int i = 0; i < MAX_SLOTS && free_i < 0; i++)
        if (c->slots[i].refs == 0) free_i = i;
    if (free_i < 0) {
        close(fd);
        return fail(c, PHAST_E_PROTOCOL, "the server named more than %d slots", MAX_SLOTS);
    }
    void *addr = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (addr == MAP_FAILED) return fail(c, PHAST_E_NOMEM, "mmap of slot %u: %s", id,
                                        strerror(errno));
    c->slots[free_i] = (slot_t){.id = id, .addr = addr, .size = (size_t)size, .refs = 1};
    return free_i;
}

/* -- the connection -- */

static void drop_connection(phast_client *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    close_reply_fds(c);
    slots_forget_names(c);
    if (c->child > 0) {
        /* A server that broke the protocol or hung may still run: it is replaced. */
        kill(c->child, SIGKILL);
        while (waitpid(c->child, NULL, 0) < 0 && errno == EINTR) {}
        c->child = 0;
    }
}

static int send_all(phast_client *c, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t k = send(c->fd, buf, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return fail(c, PHAST_E_IO, "send: %s", strerror(errno));
        buf += k;
        n -= (size_t)k;
    }
    return PHAST_OK;
}

static int wait_readable(phast_client *c, double until) {
    for (;;) {
        double left = until - now_s();
        if (left <= 0) return fail(c, PHAST_E_TIMEOUT, "no answer within %.1f s", c->timeout);
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int r = poll(&pfd, 1, left > 1e6 ? 1000000000 : (int)(left * 1000) + 1);
        if (r > 0) return PHAST_OK;
        if (r < 0 && errno != EINTR) return fail(c, PHAST_E_IO, "poll: %s", strerror(errno));
    }
}

/* Read exactly n bytes; the first read collects descriptors (SCM_RIGHTS). */
static int recv_exact(phast_client *c, char *buf, size_t n, double until, int take_fds) {
    size_t got = 0;
    while (got < n) {
        int rc = wait_readable(c, until);
        if (rc) return rc;
        union {
            char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
            struct cmsghdr align;
        } ctl;
        struct iovec iov = {.iov_base = buf + got, .iov_len = n - got};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                            .msg_controllen = sizeof ctl.buf};
        ssize_t k = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (k < 0) return fail(c, PHAST_E_IO, "recv: %s", strerror(errno));
        if (k == 0) return fail(c, PHAST_E_IO, "the server closed the connection");
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
            size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < nfd; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
                if (take_fds && got == 0 && c->nfds < MAX_FDS) c->fds[c->nfds++] = fd;
                else close(fd); /* descriptors where none may come */
            }
        }
        if (mh.msg_flags & MSG_CTRUNC) return fail(c, PHAST_E_PROTOCOL, "too many descriptors");
        got += (size_t)k;
    }
    return PHAST_OK;
}

/* One message into c->reply / c->jp. */
static int recv_message(phast_client *c, double until) {
    unsigned char head[8];
    close_reply_fds(c);
    int rc = recv_exact(c, (char *)head, 8, until, 1);
    if (rc) return rc;
    uint32_t jlen = (uint32_t)head[0] << 24 | (uint32_t)head[1] << 16 |
                    (uint32_t)head[2] << 8 | head[3];
    uint32_t blen = (uint32_t)head[4] << 24 | (uint32_t)head[5] << 16 |
                    (uint32_t)head[6] << 8 | head[7];
    if (jlen == 0 || jlen > PHAST_MAX_REPLY || blen != 0)
        return fail(c, PHAST_E_PROTOCOL, "bad message header (%u + %u bytes)", jlen, blen);
    rc = recv_exact(c, c->reply, jlen, until, 0);
    if (rc) return rc;
    c->reply[jlen] = '\0';
    if (j_parse(&c->jp, c->toks, c->reply, (int)jlen) < 0)
        return fail(c, PHAST_E_PROTOCOL, "malformed reply");
    return PHAST_OK;
}

static int clip_by_handle(const phast_client *c, int64_t handle) {
    for (int i = 0; i < MAX_CLIPS; i++)
        if (c->clips[i].used && c->clips[i].handle == handle) return i;
    return -1;
}

static void queue_event(phast_client *c) {
    const jparser *p = &c->jp;
    int64_t handle, index;
    phast_event ev = {0};
    if (j_int(p, j_get(p, 0, "clip"), 0, INT64_MAX, &handle) < 0 ||
        j_int(p, j_get(p, 0, "index"), 0, INT64_MAX, &index) < 0 ||
        j_str(p, j_get(p, 0, "format"), ev.format, sizeof ev.format) < 0)
        return; /* an event we cannot read is ignored: it only says "ask again" */
    int clip = clip_by_handle(c, handle);
    if (clip < 0) return;
    ev.clip = clip + 1;
    ev.index = index;
    if (c->ev_count == MAX_EVENTS) { /* the oldest goes */
        c->ev_head = (c->ev_head + 1) % MAX_EVENTS;
        c->ev_count--;
    }
    c->events[(c->ev_head + c->ev_count++) % MAX_EVENTS] = ev;
}

static int error_from_reply(phast_client *c) {
    const jparser *p = &c->jp;
    int e = j_get(p, 0, "error");
    char code[32] = "", msg[400] = "";
    if (j_str(p, j_get(p, e, "code"), code, sizeof code) < 0)
        return fail(c, PHAST_E_PROTOCOL, "error reply without a code");
    j_str(p, j_get(p, e, "message"), msg, sizeof msg);
    for (size_t i = 0; i < sizeof ERROR_NAMES / sizeof ERROR_NAMES[0]; i++)
        if (strcmp(code, ERROR_NAMES[i].name) == 0)
            return fail(c, ERROR_NAMES[i].code, "%s: %s", code, msg);
    return fail(c, PHAST_E_INTERNAL, "%s: %s", code, msg);
}

static void apply_drops(phast_client *c) {
    const jparser *p = &c->jp;
    int d = j_get(p, 0, "drop");
    if (d < 0 || p->t[d].type != J_ARR) return;
    for (int i = 0; i < p->t[d].count && i < MAX_SLOTS; i++) {
        int64_t id;
        if (j_int(p, j_at(p, d, i), 1, UINT32_MAX, &id) == 0) slot_drop(c, (uint32_t)id);
    }
}

/* The record header: JSON length, blob length (0), both big-endian. */
static void put_header(char *head, size_t n) {
    head[0] = (char)(n >> 24);
    head[1] = (char)(n >> 16);
    head[2] = (char)(n >> 8);
    head[3] = (char)n;
    memset(head + 4, 0, 4);
}

/* Send c->req (the JSON after REQ_HEAD bytes kept for the header, holding `"id":N`) and wait
 * for the reply with that id. Returns PHAST_OK with c->jp holding an ok reply, the server's
 * error, or a transport error (the connection is then dropped). */
static int roundtrip(phast_client *c, int64_t id, double extra) {
    if (c->fd < 0) return fail(c, PHAST_E_IO, "not connected");
    size_t n = strlen(c->req + REQ_HEAD);
    put_header(c->req, n);
    int rc = send_all(c, c->req, REQ_HEAD + n); /* header and record: one send */
    double until = now_s() + c->timeout + extra;
    while (!rc) {
        rc = recv_message(c, until);
        if (rc) break;
        const jparser *p = &c->jp;
        if (j_get(p, 0, "event") >= 0 && j_get(p, 0, "id") < 0) {
            close_reply_fds(c);
            queue_event(c);
            continue;
        }
        int ok;
        int64_t rid;
        if (j_bool(p, j_get(p, 0, "ok"), &ok) < 0) {
            rc = fail(c, PHAST_E_PROTOCOL, "reply without ok");
            break;
        }
        int idk = j_get(p, 0, "id");
        if (!ok && idk >= 0 && p->t[idk].type == J_NULL) { /* about the connection itself */
            rc = error_from_reply(c);
            if (rc == PHAST_E_INTERNAL || rc == PHAST_E_PROTOCOL) rc = PHAST_E_PROTOCOL;
            drop_connection(c);
            return rc;
        }
        if (j_int(p, idk, 0, INT64_MAX, &rid) < 0 || rid != id) {
            rc = fail(c, PHAST_E_PROTOCOL, "reply to another request");
            break;
        }
        apply_drops(c);
        if (!ok) {
            close_reply_fds(c);
            return error_from_reply(c);
        }
        return PHAST_OK;
    }
    drop_connection(c);
    return rc;
}

/* -- request building (numbers in the C locale: the host may have set another) -- */

static int req_printf(phast_client *c, size_t *at, const char *fmt, ...) {
    locale_t old = uselocale(c->cloc);
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(c->req + *at, REQUEST_CAP - *at, fmt, ap);
    va_end(ap);
    uselocale(old);
    if (k < 0 || (size_t)k >= REQUEST_CAP - *at) return -1;
    *at += (size_t)k;
    return 0;
}

static int valid_utf8(const unsigned char *s) {
    while (*s) {
        int n = *s < 0x80 ? 0 : (*s & 0xE0) == 0xC0 ? 1 : (*s & 0xF0) == 0xE0 ? 2
              : (*s & 0xF8) == 0xF0 ? 3 : -1;
        if (n < 0 || (n == 1 && *s < 0xC2)) return 0;
        s++;
        while (n-- > 0)
            if ((*s++ & 0xC0) != 0x80) return 0;
    }
    return 1;
}

static int req_string(phast_client *c, size_t *at, const char *s) {
    if (req_printf(c, at, "\"") < 0) return -1;
    for (const unsigned char *u = (const unsigned char *)s; *u; u++) {
        if (*u == '"' || *u == '\\' || *u < 0x20) {
            int r = *u < 0x20 ? req_printf(c, at, "\\u%04x", *u) : req_printf(c, at, "\\%c", *u);
            if (r < 0) return -1;
        } else if (*at + 1 < REQUEST_CAP) { /* a plain byte: no formatting, no locale switch */
            c->req[(*at)++] = (char)*u;
        } else {
            return -1;
        }
    }
    return req_printf(c, at, "\"");
}

static int64_t begin(phast_client *c, size_t *at, const char *op) {
    int64_t id = ++c->next_id;
    *at = REQ_HEAD;
    req_printf(c, at, "{\"op\":\"%s\",\"id\":%lld", op, (long long)id);
    return id;
}

/* -- starting and restarting -- */

static int hello(phast_client *c) {
    size_t at;
    int64_t id = begin(c, &at, "hello");
    if (req_printf(c, &at, ",\"version\":\"" PHAST_VERSION "\"}") < 0)
        return fail(c, PHAST_E_INVALID, "request too long");
    int rc = roundtrip(c, id, 0);
    if (rc) return rc;
    char version[32];
    int64_t pid = 0;
    if (j_str(&c->jp, j_get(&c->jp, 0, "version"), version, sizeof version) < 0 ||
        strcmp(version, PHAST_VERSION) != 0 ||
        j_int(&c->jp, j_get(&c->jp, 0, "pid"), 1, INT_MAX, &pid) < 0) {
        drop_connection(c);
        return fail(c, PHAST_E_PROTOCOL, "bad hello reply");
    }
    c->server_pid = (int)pid;
    return PHAST_OK;
}

static int start_child(phast_client *c) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return fail(c, PHAST_E_SPAWN, "socketpair: %s", strerror(errno));
    if (sv[1] == 3) { /* dup2(3, 3) would keep close-on-exec set */
        int moved = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
        close(sv[1]);
        sv[1] = moved;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
    posix_spawnattr_init(&attr);
    sigset_t none, dflt;
    sigemptyset(&none);
    sigemptyset(&dflt);
    sigaddset(&dflt, SIGPIPE);
    sigaddset(&dflt, SIGINT);
    sigaddset(&dflt, SIGTERM);
    sigaddset(&dflt, SIGCHLD);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dflt);
    /* Its own process group: a terminal's Ctrl-C is for the editor, and the server ends when
     * the editor's end of the socket closes. */
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETPGROUP);
    int n = 0;
    while (c->argv[n]) n++;
    char **argv = calloc((size_t)n + 4, sizeof *argv);
    int rc = PHAST_OK;
    if (!argv) {
        rc = fail(c, PHAST_E_NOMEM, "out of memory");
    } else {
        memcpy(argv, c->argv, (size_t)n * sizeof *argv);
        argv[n] = "serve";
        argv[n + 1] = "--fd";
        argv[n + 2] = "3";
        pid_t pid;
        int e = posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
        if (e) rc = fail(c, PHAST_E_SPAWN, "cannot run %s: %s", argv[0], strerror(e));
        else c->child = pid;
        free(argv);
    }
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(sv[1]);
    if (rc) {
        close(sv[0]);
        return rc;
    }
    c->fd = sv[0];
    return PHAST_OK;
}

static int connect_path(phast_client *c) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(c->path) >= sizeof sa.sun_path)
        return fail(c, PHAST_E_INVALID, "socket path too long");
    strcpy(sa.sun_path, c->path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail(c, PHAST_E_IO, "socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        close(fd);
        return fail(c, e == EACCES ? PHAST_E_PERMISSION : PHAST_E_IO, "connect %s: %s",
                    c->path, strerror(e));
    }
    c->fd = fd;
    return PHAST_OK;
}

static int open_remote(phast_client *c, clip_t *cl, int64_t *handle);

/* A working connection: the current one, or a new server (or connection) with every clip
 * reopened under its old handle. */
static int ensure_connected(phast_client *c) {
    if (c->fd >= 0) return PHAST_OK;
    drop_connection(c);
    int rc = c->argv ? start_child(c) : connect_path(c);
    if (!rc) rc = hello(c);
    if (rc) {
        drop_connection(c);
        return rc;
    }
    c->generation++;
    if (c->argv && c->generation > 1) c->restarts++;
    for (int i = 0; i < MAX_CLIPS; i++) {
        if (!c->clips[i].used) continue;
        int64_t h = -1;
        rc = open_remote(c, &c->clips[i], &h);
        c->clips[i].handle = h;
        if (c->fd < 0) return rc; /* the new server failed too */
    }
    return PHAST_OK;
}

/* One request: on a lost connection (server died, hung), reconnect once and retry. */
static int request(phast_client *c, int64_t (*build)(phast_client *, void *), void *arg,
                   double extra) {
    for (int attempt = 0;; attempt++) {
        int rc = ensure_connected(c);
        if (rc) return rc;
        int64_t id = build(c, arg);
        if (id < 0) return fail(c, PHAST_E_INVALID, "request too long");
        rc = roundtrip(c, id, extra);
        if ((rc != PHAST_E_IO && rc != PHAST_E_TIMEOUT) || attempt > 0) return rc;
    }
}

static int client_new(phast_client **out) {
    phast_client *c = calloc(1, sizeof *c);
    if (!c) return PHAST_E_NOMEM;
    c->cloc = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (!c->cloc) {
        free(c);
        return PHAST_E_NOMEM;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->fd = -1;
    c->timeout = 120.0;
    *out = c;
    return PHAST_OK;
}

static void client_free(phast_client *c) {
    drop_connection(c);
    for (int i = 0; i < MAX_SLOTS; i++)
        if (c->slots[i].refs > 0) munmap((void *)c->slots[i].addr, c->slots[i].size);
    for (int i = 0; i < MAX_CLIPS; i++) free(c->clips[i].path);
    if (c->argv)
        for (int i = 0; c->argv[i]; i++) free(c->argv[i]);
    free(c->argv);
    free(c->path);
    freelocale(c->cloc);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Connect a new client (or say why not, and free it). */
static int first_connection(phast_client *c, phast_client **out) {
    int rc = ensure_connected(c);
    if (rc) {
        snprintf(create_err, sizeof create_err, "%s", c->err);
        client_free(c);
        return rc;
    }
    *out = c;
    return PHAST_OK;
}

int phast_spawn(phast_client **out, const char *const *argv) {
    if (!out) return PHAST_E_INVALID;
    *out = NULL;
    phast_client *c;
    if (client_new(&c)) return PHAST_E_NOMEM;
    /* The command: argv, else $PHAST_SERVE_COMMAND split on spaces, else "phast". */
    char *env = getenv("PHAST_SERVE_COMMAND");
    char *copy = strdup(argv ? "" : env && *env ? env : "phast");
    int n = 0;
    if (argv)
        while (argv[n]) n++;
    c->argv = calloc((size_t)(argv ? n : (int)strlen(copy ? copy : "") / 2 + 1) + 1,
                     sizeof *c->argv);
    if (!copy || !c->argv) {
        free(copy);
        client_free(c);
        return PHAST_E_NOMEM;
    }
    n = 0;
    if (argv) {
        for (; argv[n]; n++)
            if (!(c->argv[n] = strdup(argv[n]))) break;
    } else {
        char *save = NULL;
        for (char *w = strtok_r(copy, " ", &save); w; w = strtok_r(NULL, " ", &save))
            if (!(c->argv[n++] = strdup(w))) break;
    }
    free(copy);
    if (n == 0) {
        client_free(c);
        return PHAST_E_INVALID;
    }
    return first_connection(c, out);
}

int phast_connect(phast_client **out, const char *path) {
    if (!out) return PHAST_E_INVALID;
    *out = NULL;
    phast_client *c;
    if (client_new(&c)) return PHAST_E_NOMEM;
    char buf[PATH_MAX];
    if (!path) {
        const char *x = getenv("XDG_RUNTIME_DIR");
        if (x && *x) snprintf(buf, sizeof buf, "%s/phast/serve.sock", x);
        else snprintf(buf, sizeof buf, "/tmp/phast-%u/serve.sock", (unsigned)geteuid());
        path = buf;
    }
    c->path = strdup(path);
    if (!c->path) {
        client_free(c);
        return PHAST_E_NOMEM;
    }
    return first_connection(c, out);
}

void phast_disconnect(phast_client *c) {
    if (!c) return;
    if (c->child > 0 && c->fd >= 0) {
        /* The server exits on end-of-file; give it a moment before drop_connection kills it. */
        shutdown(c->fd, SHUT_WR);
        for (int i = 0; i < 200; i++) {
            if (waitpid(c->child, NULL, WNOHANG) != 0) {
                c->child = 0;
                break;
            }
            usleep(10000);
        }
    }
    client_free(c);
}

void phast_set_timeout(phast_client *c, double seconds) {
    if (c && seconds > 0) c->timeout = seconds;
}

int phast_server_pid(const phast_client *c) {
    return c ? c->server_pid : 0;
}

int phast_restarts(const phast_client *c) {
    return c ? c->restarts : 0;
}

/* -- clips -- */

static int64_t build_open(phast_client *c, void *arg) {
    clip_t *cl = arg;
    size_t at;
    int64_t id = begin(c, &at, "open");
    int bad = req_printf(c, &at, ",\"path\":") < 0 || req_string(c, &at, cl->path) < 0 ||
              req_printf(c, &at, ",\"stream\":%d", cl->stream) < 0 ||
              (cl->backend[0] && (req_printf(c, &at, ",\"backend\":") < 0 ||
                                  req_string(c, &at, cl->backend) < 0)) ||
              (cl->proxies >= 0 && req_printf(c, &at, ",\"proxies\":%s",
                                              cl->proxies ? "true" : "false") < 0) ||
              (cl->budget[0] && (req_printf(c, &at, ",\"budget\":") < 0 ||
                                 req_string(c, &at, cl->budget) < 0)) ||
              req_printf(c, &at, "}") < 0;
    return bad ? -1 : id;
}

static int open_remote(phast_client *c, clip_t *cl, int64_t *handle) {
    int64_t id = build_open(c, cl);
    if (id < 0) return fail(c, PHAST_E_INVALID, "request too long");
    int rc = roundtrip(c, id, 0);
    if (rc) return rc;
    if (j_int(&c->jp, j_get(&c->jp, 0, "clip"), 0, INT64_MAX, handle) < 0) {
        drop_connection(c);
        return fail(c, PHAST_E_PROTOCOL, "open reply without a clip handle");
    }
    return PHAST_OK;
}

int phast_open(phast_client *c, const char *path, const phast_open_options *o, int *clip_out) {
    if (!c || !path || !clip_out) return PHAST_E_INVALID;
    pthread_mutex_lock(&c->mu);
    int rc, slot = -1;
    char *abs = NULL;
    for (int i = 0; i < MAX_CLIPS && slot < 0; i++)
        if (!c->clips[i].used) slot = i;
    if (slot < 0) {
        rc = fail(c, PHAST_E_LIMIT, "%d clips are open", MAX_CLIPS);
        goto out;
    }
    if (path[0] == '/') {
        abs = strdup(path);
    } else {
        char cwd[PATH_MAX];
        if (getcwd(cwd, sizeof cwd) && (abs = malloc(strlen(cwd) + strlen(path) + 2)))
            sprintf(abs, "%s/%s", cwd, path);
    }
    if (!abs) {
        rc = fail(c, PHAST_E_NOMEM, "out of memory");
        goto out;
    }
    if (strlen(abs) > MAX_PATH_BYTES || !valid_utf8((const unsigned char *)abs)) {
        free(abs);
        rc = fail(c, PHAST_E_INVALID, "path is too long or not valid UTF-8");
        goto out;
    }
    clip_t cl = {.used = 1, .handle = -1, .path = abs, .stream = o ? o->stream : 0,
                 .proxies = o ? o->proxies : -1};
    if (o && o->stream < 0) {
        free(abs);
        rc = fail(c, PHAST_E_INVALID, "stream must be >= 0");
        goto out;
    }
    if (o && o->backend) snprintf(cl.backend, sizeof cl.backend, "%s", o->backend);
    if (o && o->budget) snprintf(cl.budget, sizeof cl.budget, "%s", o->budget);
    rc = request(c, build_open, &cl, 0);
    if (!rc && j_int(&c->jp, j_get(&c->jp, 0, "clip"), 0, INT64_MAX, &cl.handle) < 0) {
        drop_connection(c);
        rc = fail(c, PHAST_E_PROTOCOL, "open reply without a clip handle");
    }
    if (rc) {
        free(abs);
        goto out;
    }
    c->clips[slot] = cl;
    *clip_out = slot + 1;
out:
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static clip_t *clip_of(phast_client *c, int clip) {
    if (clip < 1 || clip > MAX_CLIPS || !c->clips[clip - 1].used) return NULL;
    return &c->clips[clip - 1];
}

typedef struct {
    const char *op;
    clip_t *clip;
} simple_req;

static int64_t build_simple(phast_client *c, void *arg) {
    simple_req *r = arg;
    size_t at;
    int64_t id = begin(c, &at, r->op);
    if (r->clip && req_printf(c, &at, ",\"clip\":%lld", (long long)r->clip->handle) < 0)
        return -1;
    return req_printf(c, &at, "}") < 0 ? -1 : id;
}

int phast_info(phast_client *c, int clip, phast_clip_info *out) {
    if (!c || !out) return PHAST_E_INVALID;
    pthread_mutex_lock(&c->mu);
    int rc;
    simple_req r = {"info", clip_of(c, clip)};
    if (!r.clip) {
        rc = fail(c, PHAST_E_NO_CLIP, "no clip %d", clip);
        goto out;
    }
    rc = request(c, build_simple, &r, 0);
    if (rc) goto out;
    const jparser *p = &c->jp;
    int in = j_get(p, 0, "info");
    int64_t w, h, depth, rot, n, kn, rate0, rate1, tb0, tb1;
    int vfr;
    phast_clip_info info = {0};
    double start = 0, dur = 0;
    if (j_int(p, j_get(p, in, "width"), 1, 1 << 16, &w) < 0 ||
        j_int(p, j_get(p, in, "height"), 1, 1 << 16, &h) < 0 ||
        j_int(p, j_get(p, in, "bit_depth"), 1, 32, &depth) < 0 ||
        j_int(p, j_get(p, in, "rotation"), -360, 360, &rot) < 0 ||
        j_int(p, j_get(p, in, "frame_count"), 1, INT64_MAX, &n) < 0 ||
        j_int(p, j_get(p, in, "keyframe_count"), 0, INT64_MAX, &kn) < 0 ||
        j_int(p, j_at(p, j_get(p, in, "average_rate"), 0), 0, INT32_MAX, &rate0) < 0 ||
        j_int(p, j_at(p, j_get(p, in, "average_rate"), 1), 1, INT32_MAX, &rate1) < 0 ||
        j_int(p, j_at(p, j_get(p, in, "time_base"), 0), 1, INT32_MAX, &tb0) < 0 ||
        j_int(p, j_at(p, j_get(p, in, "time_base"), 1), 1, INT32_MAX, &tb1) < 0 ||
        j_bool(p, j_get(p, in, "is_vfr"), &vfr) < 0 ||
        j_str(p, j_get(p, in, "codec"), info.codec, sizeof info.codec) < 0 ||
        j_str(p, j_get(p, in, "pix_fmt"), info.pix_fmt, sizeof info.pix_fmt) < 0) {
        drop_connection(c);
        rc = fail(c, PHAST_E_PROTOCOL, "malformed info reply");
        goto out;
    }
    if (j_double(p, j_get(p, in, "start_time"), c->cloc, &start) < 0 ||
        j_double(p, j_get(p, in, "duration"), c->cloc, &dur) < 0) {
        drop_connection(c);
        rc = fail(c, PHAST_E_PROTOCOL, "malformed info times");
        goto out;
    }
    j_str(p, j_get(p, in, "backend"), info.backend, sizeof info.backend);
    j_str(p, j_get(p, in, "index_method"), info.index_method, sizeof info.index_method);
    info.width = (int)w;
    info.height = (int)h;
    info.bit_depth = (int)depth;
    info.rotation = (int)rot;
    info.is_vfr = vfr;
    info.frame_count = n;
    info.keyframe_count = kn;
    info.rate_num = rate0;
    info.rate_den = rate1;
    info.tb_num = tb0;
    info.tb_den = tb1;
    info.start_time = start;
    info.duration = dur;
    *out = info;
out:
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int phast_close(phast_client *c, int clip) {
    if (!c) return PHAST_E_INVALID;
    pthread_mutex_lock(&c->mu);
    int rc = PHAST_OK;
    simple_req r = {"close", clip_of(c, clip)};
    if (!r.clip) {
        rc = fail(c, PHAST_E_NO_CLIP, "no clip %d", clip);
    } else {
        if (c->fd >= 0 && r.clip->handle >= 0) {
            int64_t id = build_simple(c, &r);
            rc = roundtrip(c, id, 0);
            if (rc == PHAST_E_IO || rc == PHAST_E_NO_CLIP) rc = PHAST_OK; /* it is gone */
        }
        free(r.clip->path);
        memset(r.clip, 0, sizeof *r.clip);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int phast_ping(phast_client *c) {
    if (!c) return PHAST_E_INVALID;
    pthread_mutex_lock(&c->mu);
    simple_req r = {"ping", NULL};
    int rc = request(c, build_simple, &r, 0);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* -- frames -- */

typedef struct {
    clip_t *clip;
    int64_t index;
    double seconds;
    int by_time, notify;
    const char *format;
    double deadline;
} frame_req;

static int64_t build_frame(phast_client *c, void *arg) {
    frame_req *r = arg;
    size_t at;
    int64_t id = begin(c, &at, "frame");
    int bad = req_printf(c, &at, ",\"clip\":%lld,\"format\":", (long long)r->clip->handle) < 0 ||
              req_string(c, &at, r->format) < 0;
    if (r->by_time) bad = bad || req_printf(c, &at, ",\"time\":%.17g", r->seconds) < 0;
    else bad = bad || req_printf(c, &at, ",\"index\":%lld", (long long)r->index) < 0;
    if (r->deadline > 0) bad = bad || req_printf(c, &at, ",\"deadline\":%.17g", r->deadline) < 0;
    if (r->notify) bad = bad || req_printf(c, &at, ",\"notify\":true") < 0;
    return bad || req_printf(c, &at, "}") < 0 ? -1 : id;
}

static const char *const QUALITIES[] = {"exact", "proxy", "nearest", "blank"};

/* Check the frame reply in c->jp and fill `f`; the slot is mapped if new. */
static int read_frame(phast_client *c, phast_frame *f) {
    const jparser *p = &c->jp;
    phast_frame fr = {0};
    int64_t lease, sid, size, w, h, item, idx, shows, pts;
    int isnew, key = 0;
    char q[16];
    int sk = j_get(p, 0, "slot"), pl = j_get(p, 0, "planes");
    if (j_int(p, j_get(p, 0, "lease"), 1, INT64_MAX, &lease) < 0 ||
        j_int(p, j_get(p, sk, "id"), 1, UINT32_MAX, &sid) < 0 ||
        j_int(p, j_get(p, sk, "size"), 1, (int64_t)MAX_SLOT_SIZE, &size) < 0 ||
        j_bool(p, j_get(p, sk, "new"), &isnew) < 0 ||
        j_int(p, j_get(p, 0, "width"), 1, 1 << 16, &w) < 0 ||
        j_int(p, j_get(p, 0, "height"), 1, 1 << 16, &h) < 0 ||
        j_int(p, j_get(p, 0, "itemsize"), 1, 2, &item) < 0 ||
        j_int(p, j_get(p, 0, "index"), 0, INT64_MAX, &idx) < 0 ||
        j_int(p, j_get(p, 0, "shows"), -1, INT64_MAX, &shows) < 0 ||
        j_int(p, j_get(p, 0, "pts"), INT64_MIN, INT64_MAX, &pts) < 0 ||
        j_str(p, j_get(p, 0, "quality"), q, sizeof q) < 0 ||
        j_str(p, j_get(p, 0, "format"), fr.format, sizeof fr.format) < 0 ||
        j_str(p, j_get(p, 0, "pix_fmt"), fr.pix_fmt, sizeof fr.pix_fmt) < 0 ||
        pl < 0 || p->t[pl].type != J_ARR || p->t[pl].count < 1 || p->t[pl].count > 4)
        return fail(c, PHAST_E_PROTOCOL, "malformed frame reply");
    j_bool(p, j_get(p, 0, "key_frame"), &key);
    j_double(p, j_get(p, 0, "time"), c->cloc, &fr.time);
    fr.quality = (phast_quality)-1;
    for (int i = 0; i < 4; i++)
        if (strcmp(q, QUALITIES[i]) == 0) fr.quality = (phast_quality)i;
    if ((int)fr.quality < 0) return fail(c, PHAST_E_PROTOCOL, "unknown quality %s", q);
    fr.n_planes = p->t[pl].count;
    for (int i = 0; i < fr.n_planes; i++) {
        int e = j_at(p, pl, i);
        int64_t v[4];
        if (e < 0 || p->t[e].type != J_ARR || p->t[e].count != 4)
            return fail(c, PHAST_E_PROTOCOL, "malformed plane");
        for (int k = 0; k < 4; k++)
            if (j_int(p, j_at(p, e, k), k == 0 ? 0 : 1, (int64_t)MAX_SLOT_SIZE, &v[k]) < 0)
                return fail(c, PHAST_E_PROTOCOL, "malformed plane");
        /* offset, stride, rows, row_bytes: the last row must end inside the slot */
        if (v[1] > INT_MAX || v[2] > (1 << 16) || v[3] > v[1] ||
            (uint64_t)v[0] + (uint64_t)(v[2] - 1) * (uint64_t)v[1] + (uint64_t)v[3] >
                (uint64_t)size)
            return fail(c, PHAST_E_PROTOCOL, "plane %d is outside its slot", i);
        fr.linesize[i] = (int)v[1];
        fr.rows[i] = (int)v[2];
        fr.row_bytes[i] = (int)v[3];
        fr.data[i] = (const uint8_t *)(uintptr_t)v[0]; /* offset until the slot is known */
    }
    int si = slot_find(c, (uint32_t)sid);
    if (isnew) {
        if (c->nfds != 1 || si >= 0)
            return fail(c, PHAST_E_PROTOCOL, "new slot %lld without exactly one descriptor",
                        (long long)sid);
        int fd = c->fds[0];
        c->nfds = 0;
        si = slot_map(c, (uint32_t)sid, (uint64_t)size, fd);
        if (si < 0) return si;
    } else if (c->nfds != 0 || si < 0 || c->slots[si].size < (size_t)size) {
        return fail(c, PHAST_E_PROTOCOL, "unknown slot %lld", (long long)sid);
    }
    for (int i = 0; i < fr.n_planes; i++)
        fr.data[i] = c->slots[si].addr + (uintptr_t)fr.data[i];
    c->slots[si].refs++;
    fr.width = (int)w;
    fr.height = (int)h;
    fr.itemsize = (int)item;
    fr.index = idx;
    fr.shows = shows;
    fr.pts = pts;
    fr.key_frame = key;
    fr.lease_ = (uint64_t)lease;
    fr.generation_ = c->generation;
    fr.slot_ = si + 1;
    *f = fr;
    return PHAST_OK;
}

static int frame_common(phast_client *c, int clip, frame_req *r, phast_frame *out) {
    if (!c || !out || !r->format) return PHAST_E_INVALID;
    memset(out, 0, sizeof *out);
    if (strlen(r->format) >= sizeof out->format)
        return fail(c, PHAST_E_INVALID, "unknown format");
    pthread_mutex_lock(&c->mu);
    int rc;
    r->clip = clip_of(c, clip);
    if (!r->clip) {
        rc = fail(c, PHAST_E_NO_CLIP, "no clip %d", clip);
    } else {
        rc = request(c, build_frame, r, r->deadline > 0 ? r->deadline : 0);
        if (!rc) {
            rc = read_frame(c, out);
            if (rc) {
                memset(out, 0, sizeof *out);
                drop_connection(c); /* a reply we could not use: this server is not trusted */
            }
        }
    }
    close_reply_fds(c);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int phast_frame_get(phast_client *c, int clip, int64_t index, const char *format,
                    double deadline, phast_frame *out) {
    frame_req r = {.index = index, .format = format, .deadline = deadline};
    return frame_common(c, clip, &r, out);
}

int phast_frame_at(phast_client *c, int clip, double seconds, const char *format,
                   double deadline, phast_frame *out) {
    frame_req r = {.seconds = seconds, .by_time = 1, .format = format, .deadline = deadline};
    return frame_common(c, clip, &r, out);
}

int phast_frame_notify(phast_client *c, int clip, int64_t index, const char *format,
                       double deadline, phast_frame *out) {
    if (!(deadline > 0)) return PHAST_E_INVALID;
    frame_req r = {.index = index, .format = format, .deadline = deadline, .notify = 1};
    return frame_common(c, clip, &r, out);
}

int phast_next_event(phast_client *c, phast_event *ev) {
    if (!c || !ev) return 0;
    pthread_mutex_lock(&c->mu);
    int got = c->ev_count > 0;
    if (got) {
        *ev = c->events[c->ev_head];
        c->ev_head = (c->ev_head + 1) % MAX_EVENTS;
        c->ev_count--;
    }
    pthread_mutex_unlock(&c->mu);
    return got;
}

int phast_release(phast_client *c, phast_frame *f) {
    if (!c || !f) return PHAST_E_INVALID;
    if (f->slot_ == 0) return PHAST_OK; /* zeroed or already released */
    pthread_mutex_lock(&c->mu);
    int si = f->slot_ - 1;
    if (si >= 0 && si < MAX_SLOTS && c->slots[si].refs > 0) {
        if (f->generation_ == c->generation && c->fd >= 0) {
            /* No reply: a release costs no round trip. The server frees the rest when the
             * connection ends, so a failed send loses nothing. */
            char msg[96];
            int n = snprintf(msg + REQ_HEAD, sizeof msg - REQ_HEAD,
                             "{\"op\":\"release\",\"leases\":[%llu]}",
                             (unsigned long long)f->lease_);
            put_header(msg, (size_t)n);
            if (send_all(c, msg, REQ_HEAD + (size_t)n)) drop_connection(c);
        }
        slot_unref(c, si);
    }
    memset(f, 0, sizeof *f);
    pthread_mutex_unlock(&c->mu);
    return PHAST_OK;
}
