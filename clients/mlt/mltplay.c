/* mltplay: a paced MLT player loop for `hwbench mlt` (no display).
 *
 *   mltplay PROFILE SOURCE MODE SECONDS [DEADLINE]
 *
 * Loads SOURCE ("phast:FILE" or "avformat:FILE") through MLT's loader, as melt does, and asks
 * it for one picture per frame period of PROFILE, on a wall-clock schedule: MODE "play" plays
 * from the start; "seek" jumps to a pseudo-random position every 15 frames (an editor's
 * timeline of short cuts, a user clicking about). A picture not ready when its period ends is
 * late; a player then drops the periods it missed (counted). DEADLINE, for phast, sets the
 * producer's phast.deadline (default: one frame period).
 *
 * One line per shown picture: position, microseconds it took, a hash of its luma (0 if the
 * picture was not yuv420p), phast's tier, its size; a last line with totals and the CPU time of this process and its reaped children
 * (phast serve and its workers).
 */
#define _GNU_SOURCE
#include <framework/mlt.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_until(double t) {
    struct timespec ts = {.tv_sec = (time_t)t, .tv_nsec = (long)((t - (double)(time_t)t) * 1e9)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {}
}

static double cpu_s(int who) {
    struct rusage ru;
    getrusage(who, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: mltplay PROFILE SOURCE play|seek SECONDS [DEADLINE]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!mlt_factory_init(NULL)) return 2;
    mlt_profile profile = mlt_profile_init(argv[1]);
    mlt_producer producer = mlt_factory_producer(profile, NULL, argv[2]);
    if (!producer) {
        fprintf(stderr, "mltplay: cannot load %s\n", argv[2]);
        return 2;
    }
    double fps = mlt_profile_fps(profile), period = 1.0 / fps;
    char deadline[32];
    snprintf(deadline, sizeof deadline, "%.6f", argc > 5 ? atof(argv[5]) : period);
    mlt_properties_set(MLT_PRODUCER_PROPERTIES(producer), "phast.deadline", deadline);
    int seek = !strcmp(argv[3], "seek");
    int total = (int)(atof(argv[4]) * fps);
    int length = mlt_producer_get_length(producer);
    uint32_t rng = 15;
    int shown = 0, late = 0, dropped = 0, position = 0;
    double start = now_s() + 0.2;
    for (int tick = 0; tick < total; tick++) {
        if (seek && tick % 15 == 0) {
            rng = rng * 1664525u + 1013904223u;
            position = (int)(rng % (uint32_t)(length > 15 ? length - 15 : 1));
        }
        double due = start + tick * period;
        if (now_s() > due + period) { /* this period went by while a picture was late */
            dropped++;
            position++;
            continue;
        }
        sleep_until(due);
        double t0 = now_s();
        mlt_producer_seek(producer, position % length);
        mlt_frame frame = NULL;
        mlt_service_get_frame(MLT_PRODUCER_SERVICE(producer), &frame, 0);
        uint8_t *image = NULL;
        mlt_image_format fmt = mlt_image_yuv420p;
        int w = profile->width, h = profile->height;
        uint64_t hash = 0;
        if (frame && !mlt_frame_get_image(frame, &image, &fmt, &w, &h, 0) && image &&
            fmt == mlt_image_yuv420p) {
            /* a weighted sum of the luma, mod 2^64 (hwbench.mlt.luma_hash computes the same) */
            for (uint64_t i = 0; i < (uint64_t)w * (uint64_t)h; i++)
                hash += image[i] * (((i * 2654435761u) & 0xffffffffu) | 1u);
        }
        double took = now_s() - t0;
        const char *q = frame ? mlt_properties_get(MLT_FRAME_PROPERTIES(frame), "phast.quality")
                              : NULL;
        printf("%d %.0f %016llx %s %d %d\n", position % length, took * 1e6,
               (unsigned long long)hash, q ? q : "-", w, h);
        if (took > period) late++;
        shown++;
        position++;
        if (frame) mlt_frame_close(frame);
    }
    mlt_producer_close(producer);
    mlt_profile_close(profile);
    mlt_factory_close();
    printf("TOTAL shown=%d late=%d dropped=%d cpu_self=%.3f cpu_children=%.3f wall=%.3f\n",
           shown, late, dropped, cpu_s(RUSAGE_SELF), cpu_s(RUSAGE_CHILDREN), now_s() - start);
    return 0;
}
