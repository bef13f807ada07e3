/* phast_test: the C client's test driver, run by tests/test_c_client.py (and .ci/run).
 *
 *   phast_test frames CLIP OUTDIR    frames by index, by time, native and packed, errors; each
 *                                    frame's planes written to OUTDIR for pytest to compare
 *                                    with an independent PyAV decode; one JSON line per event
 *   phast_test restart CLIP          SIGKILL the server between two frames: the second works
 *   phast_test hostile CMD...        one hostile server (CMD serve --fd 3): every call fails
 *                                    with a code, never a crash (ASan/UBSan watch)
 *   phast_test bench CLIP N          N RAM-hit frame round trips and N pings: p50/p95 in us
 *
 * Exit status 0 unless a check in this program failed (pytest checks the rest).
 */
#define _GNU_SOURCE
#include "../phast.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            failures++;                                                    \
            fprintf(stderr, "CHECK FAILED line %d: ", __LINE__);           \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
        }                                                                  \
    } while (0)

static const char *const QUALITY[] = {"exact", "proxy", "nearest", "blank"};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int open_fds(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

/* Write the frame's visible bytes (rows x row_bytes per plane, back to back) and a line. */
static void dump(const char *dir, const char *name, const phast_frame *f) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.raw", dir, name);
    FILE *out = fopen(path, "wb");
    CHECK(out != NULL, "cannot write %s", path);
    if (!out) return;
    printf("{\"frame\":\"%s\",\"index\":%lld,\"shows\":%lld,\"pts\":%lld,\"time\":%.9f,"
           "\"quality\":\"%s\",\"width\":%d,\"height\":%d,\"pix_fmt\":\"%s\",\"format\":\"%s\","
           "\"planes\":[",
           name, (long long)f->index, (long long)f->shows, (long long)f->pts, f->time,
           QUALITY[f->quality], f->width, f->height, f->pix_fmt, f->format);
    for (int i = 0; i < f->n_planes; i++) {
        for (int r = 0; r < f->rows[i]; r++)
            fwrite(f->data[i] + (size_t)r * (size_t)f->linesize[i], 1, (size_t)f->row_bytes[i], out);
        printf("%s[%d,%d]", i ? "," : "", f->rows[i], f->row_bytes[i]);
    }
    printf("]}\n");
    fclose(out);
}

static unsigned long checksum(const phast_frame *f) {
    unsigned long h = 5381;
    for (int i = 0; i < f->n_planes; i++)
        for (int r = 0; r < f->rows[i]; r++)
            for (int b = 0; b < f->row_bytes[i]; b++)
                h = h * 33 + f->data[i][(size_t)r * (size_t)f->linesize[i] + (size_t)b];
    return h;
}

static int spawn(phast_client **c) {
    int rc = phast_spawn(c, NULL);
    if (rc) fprintf(stderr, "spawn: %s: %s\n", phast_strerror(rc), phast_errmsg(NULL));
    return rc;
}

static int cmd_frames(const char *clip_path, const char *dir) {
    int fds_before = open_fds();
    phast_client *c;
    if (spawn(&c)) return 2;
    int clip;
    int rc = phast_open(c, clip_path, NULL, &clip);
    CHECK(rc == PHAST_OK, "open: %s", phast_errmsg(c));
    if (rc) return 2;
    phast_clip_info info;
    rc = phast_info(c, clip, &info);
    CHECK(rc == PHAST_OK, "info: %s", phast_errmsg(c));
    printf("{\"info\":{\"width\":%d,\"height\":%d,\"frame_count\":%lld,\"rate\":[%lld,%lld],"
           "\"codec\":\"%s\",\"pix_fmt\":\"%s\",\"is_vfr\":%d,\"start_time\":%.9f,"
           "\"duration\":%.9f}}\n",
           info.width, info.height, (long long)info.frame_count, (long long)info.rate_num,
           (long long)info.rate_den, info.codec, info.pix_fmt, info.is_vfr, info.start_time,
           info.duration);

    /* frames by index, in both kinds of format, out of order (seeks both ways) */
    const int64_t picks[] = {0, 5, info.frame_count - 1, 37 % info.frame_count, 1};
    const char *formats[] = {"native", "rgb24", "gray"};
    phast_frame f;
    char name[64];
    for (size_t k = 0; k < sizeof picks / sizeof picks[0]; k++)
        for (size_t j = 0; j < 3; j++) {
            rc = phast_frame_get(c, clip, picks[k], formats[j], 0, &f);
            CHECK(rc == PHAST_OK, "frame %lld %s: %s", (long long)picks[k], formats[j],
                  phast_errmsg(c));
            if (rc) continue;
            CHECK(f.quality == PHAST_EXACT && f.index == picks[k] && f.shows == picks[k],
                  "frame %lld not exact", (long long)picks[k]);
            snprintf(name, sizeof name, "i%lld_%s", (long long)picks[k], formats[j]);
            dump(dir, name, &f);
            phast_release(c, &f);
            CHECK(f.data[0] == NULL, "release does not clear the frame");
        }
    /* negative index: from the end */
    rc = phast_frame_get(c, clip, -1, "rgb24", 0, &f);
    CHECK(rc == PHAST_OK && f.index == info.frame_count - 1, "frame -1");
    phast_release(c, &f);
    /* by time: the middle of frame 7 (stream clock) */
    rc = phast_frame_get(c, clip, 7, "rgb24", 0, &f);
    double t7 = f.time;
    phast_release(c, &f);
    rc = phast_frame_at(c, clip, t7 + 1e-6, "rgb24", 0, &f);
    CHECK(rc == PHAST_OK && f.index == 7, "frame at %.6f: %s", t7, phast_errmsg(c));
    if (!rc) dump(dir, "t7_rgb24", &f);
    phast_release(c, &f);
    /* a deadline answer is on time whatever its tier */
    double t0 = now_s();
    rc = phast_frame_notify(c, clip, info.frame_count / 2, "rgb24", 0.05, &f);
    double took = now_s() - t0;
    CHECK(rc == PHAST_OK && f.index == info.frame_count / 2, "deadline frame: %s",
          phast_errmsg(c));
    printf("{\"deadline\":{\"quality\":\"%s\",\"shows\":%lld,\"seconds\":%.4f}}\n",
           rc ? "?" : QUALITY[f.quality], (long long)f.shows, took);
    if (!rc) {
        snprintf(name, sizeof name, "deadline_rgb24");
        dump(dir, name, &f);
    }
    phast_release(c, &f);
    /* errors, each with its code */
    rc = phast_frame_get(c, clip, info.frame_count + 5, "rgb24", 0, &f);
    printf("{\"error\":\"out_of_range\",\"code\":%d,\"message\":\"%s\"}\n", rc, "-");
    CHECK(rc == PHAST_E_OUT_OF_RANGE && f.data[0] == NULL, "out of range: %d", rc);
    rc = phast_frame_get(c, clip, 0, "yuv9000", 0, &f);
    CHECK(rc == PHAST_E_INVALID, "bad format: %d", rc);
    rc = phast_frame_get(c, 42, 0, "rgb24", 0, &f);
    CHECK(rc == PHAST_E_NO_CLIP, "bad clip: %d", rc);
    rc = phast_frame_at(c, clip, -100.0, "rgb24", 0, &f);
    CHECK(rc == PHAST_E_OUT_OF_RANGE, "time before the clip: %d", rc);
    int other;
    rc = phast_open(c, "/nonexistent/clip.mp4", NULL, &other);
    CHECK(rc == PHAST_E_NOT_FOUND, "missing file: %d %s", rc, phast_errmsg(c));
    rc = phast_open(c, "/etc/hostname", NULL, &other);
    CHECK(rc == PHAST_E_MEDIA, "not a video: %d %s", rc, phast_errmsg(c));
    phast_open_options bad = {.stream = 0, .backend = "no-such-backend", .proxies = -1};
    rc = phast_open(c, clip_path, &bad, &other);
    CHECK(rc == PHAST_E_BACKEND, "bad backend: %d %s", rc, phast_errmsg(c));
    /* the lease limit: the server holds 64 per client, then LIMIT; releasing frees them */
    static phast_frame held[64];
    int got = 0;
    for (int i = 0; i < 64; i++)
        if (phast_frame_get(c, clip, i % 4, "rgb24", 0, &held[i]) == PHAST_OK) got++;
    rc = phast_frame_get(c, clip, 0, "rgb24", 0, &f);
    CHECK(got == 64 && rc == PHAST_E_LIMIT, "lease limit: %d frames, then %d", got, rc);
    for (int i = 0; i < 64; i++) phast_release(c, &held[i]);
    rc = phast_frame_get(c, clip, 0, "rgb24", 0, &f);
    CHECK(rc == PHAST_OK, "after releasing: %d", rc);
    /* a frame stays readable after its clip closes, until released */
    unsigned long sum = checksum(&f);
    CHECK(phast_close(c, clip) == PHAST_OK, "close");
    CHECK(checksum(&f) == sum, "frame changed after close");
    phast_release(c, &f);
    rc = phast_frame_get(c, clip, 0, "rgb24", 0, &f);
    CHECK(rc == PHAST_E_NO_CLIP, "closed clip: %d", rc);
    phast_event ev;
    int events = 0;
    while (phast_next_event(c, &ev)) events++;
    printf("{\"events\":%d}\n", events);
    phast_disconnect(c);
    int fds_after = open_fds();
    printf("{\"fds_before\":%d,\"fds_after\":%d}\n", fds_before, fds_after);
    CHECK(fds_after == fds_before, "descriptors leaked: %d -> %d", fds_before, fds_after);
    return failures ? 1 : 0;
}

static int cmd_restart(const char *clip_path) {
    phast_client *c;
    if (spawn(&c)) return 2;
    int clip;
    phast_frame a, b;
    CHECK(phast_open(c, clip_path, NULL, &clip) == PHAST_OK, "open: %s", phast_errmsg(c));
    CHECK(phast_frame_get(c, clip, 3, "rgb24", 0, &a) == PHAST_OK, "frame 3");
    unsigned long sum = checksum(&a);
    int pid = phast_server_pid(c);
    printf("{\"server_pid\":%d}\n", pid);
    fflush(stdout);
    kill(pid, SIGKILL);
    usleep(100000);
    double t0 = now_s();
    int rc = phast_frame_get(c, clip, 4, "rgb24", 0, &b);
    double took = now_s() - t0;
    CHECK(rc == PHAST_OK && b.index == 4 && b.quality == PHAST_EXACT, "frame after the kill: %s",
          phast_errmsg(c));
    CHECK(phast_restarts(c) == 1 && phast_server_pid(c) != pid, "restarts %d",
          phast_restarts(c));
    CHECK(checksum(&a) == sum, "a frame of the dead server changed");
    printf("{\"after_kill_s\":%.4f,\"restarts\":%d,\"new_pid\":%d}\n", took, phast_restarts(c),
           phast_server_pid(c));
    phast_release(c, &a);
    phast_release(c, &b);
    /* and the next frame costs what frames cost */
    t0 = now_s();
    rc = phast_frame_get(c, clip, 5, "rgb24", 0, &b);
    printf("{\"next_s\":%.4f}\n", now_s() - t0);
    CHECK(rc == PHAST_OK, "frame 5");
    phast_release(c, &b);
    phast_disconnect(c);
    return failures ? 1 : 0;
}

static int cmd_hostile(char **argv) {
    int fds_before = open_fds();
    phast_client *c;
    const char *const *cmd = (const char *const *)argv;
    int rc = phast_spawn(&c, cmd);
    printf("{\"step\":\"spawn\",\"code\":%d}\n", rc);
    if (rc) CHECK(phast_errmsg(NULL)[0] != '\0', "no message for a failed spawn");
    if (rc) {
        int after = open_fds();
        CHECK(after == fds_before, "descriptors leaked: %d -> %d", fds_before, after);
        return failures ? 1 : 0;
    }
    phast_set_timeout(c, 1.0);
    int clip = 0;
    rc = phast_open(c, "/hostile/clip.mp4", NULL, &clip);
    printf("{\"step\":\"open\",\"code\":%d}\n", rc);
    if (rc == PHAST_OK) {
        phast_clip_info info;
        rc = phast_info(c, clip, &info);
        printf("{\"step\":\"info\",\"code\":%d}\n", rc);
        for (int i = 0; i < 3; i++) {
            phast_frame f;
            rc = phast_frame_get(c, clip, i, "native", 0, &f);
            printf("{\"step\":\"frame\",\"code\":%d}\n", rc);
            if (rc == PHAST_OK) {
                /* touch every byte the client says is readable */
                volatile unsigned long s = checksum(&f);
                (void)s;
                phast_release(c, &f);
            }
        }
        phast_close(c, clip);
    }
    phast_event ev;
    while (phast_next_event(c, &ev)) {}
    phast_disconnect(c);
    int after = open_fds();
    printf("{\"fds_before\":%d,\"fds_after\":%d}\n", fds_before, after);
    CHECK(after == fds_before, "descriptors leaked: %d -> %d", fds_before, after);
    return failures ? 1 : 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmd_bench(const char *clip_path, int n, const char *format) {
    phast_client *c;
    if (spawn(&c)) return 2;
    int clip;
    if (phast_open(c, clip_path, NULL, &clip)) {
        fprintf(stderr, "open: %s\n", phast_errmsg(c));
        return 2;
    }
    phast_frame f;
    double *t = calloc((size_t)n, sizeof *t), *p = calloc((size_t)n, sizeof *p);
    if (!t || !p) return 2;
    if (phast_frame_get(c, clip, 10, format, 0, &f)) return 2; /* now in the RAM tier */
    phast_release(c, &f);
    for (int i = 0; i < n; i++) {
        double t0 = now_s();
        int rc = phast_frame_get(c, clip, 10, format, 0, &f);
        phast_release(c, &f);
        t[i] = (now_s() - t0) * 1e6;
        if (rc) return 2;
        t0 = now_s();
        phast_ping(c);
        p[i] = (now_s() - t0) * 1e6;
    }
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    qsort(p, (size_t)n, sizeof *p, cmp_double);
    printf("{\"format\":\"%s\",\"n\":%d,\"frame_p50_us\":%.1f,\"frame_p95_us\":%.1f,"
           "\"frame_p99_us\":%.1f,\"ping_p50_us\":%.1f,\"ping_p95_us\":%.1f}\n",
           format, n, t[n / 2], t[n * 95 / 100], t[n * 99 / 100], p[n / 2], p[n * 95 / 100]);
    free(t);
    free(p);
    phast_disconnect(c);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 4 && strcmp(argv[1], "frames") == 0) return cmd_frames(argv[2], argv[3]);
    if (argc >= 3 && strcmp(argv[1], "restart") == 0) return cmd_restart(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "hostile") == 0) return cmd_hostile(argv + 2);
    if (argc >= 4 && strcmp(argv[1], "bench") == 0)
        return cmd_bench(argv[2], atoi(argv[3]) > 0 ? atoi(argv[3]) : 1000,
                         argc >= 5 ? argv[4] : "native");
    fprintf(stderr, "usage: phast_test frames CLIP OUTDIR | restart CLIP | hostile CMD... | "
                    "bench CLIP N [FORMAT]\n");
    return 2;
}
