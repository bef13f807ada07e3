/* producer_phast.c -- the MLT producer "phast": frames from `phast serve` (clients/c).
 *
 *   melt phast:clip.mp4 ...            (clients/mlt/melt-phast makes the module visible)
 *
 * Properties are set as MLT's avformat producer sets them (resource, length, out, width,
 * height, aspect_ratio, progressive, format, seekable, meta.media.*), so that MLT's automatic
 * profile and its normalising filters treat both producers alike. Positions are mapped to
 * stream times with the profile's frame rate and the frame shown at that time is served: for a
 * constant-rate clip at the profile's rate, position p is frame p; for a variable-rate clip it
 * is the frame on screen at p / fps (what avformat approximates by seeking).
 *
 * Exact or on time:
 *   - rendering (a consumer with real_time <= 0, which never drops frames, or no consumer
 *     known): the EXACT frame, blocking;
 *   - realtime playback (real_time > 0: a player that drops late frames): answered within one
 *     frame period with the best
 *     tier phast has (EXACT, PROXY, NEAREST, BLANK; "phast.quality", "phast.shows" on the frame);
 *   - the producer property "phast.deadline" overrides both: seconds (> 0), or 0 for EXACT.
 *
 * Images: yuv420p straight from the decoder's planes for 8-bit 4:2:0 sources with even sizes
 * (MLT's avformat producer gives the same bytes for yuv420p), yuv422 (packed, a plain
 * reshuffle) for 8-bit 4:2:2 sources, rgb and rgba converted by phast when asked for; anything
 * else is rgb and MLT converts it. All frames of a process share one `phast serve` child.
 */
#define _GNU_SOURCE /* MLT 7 headers use locale_t */
#include <framework/mlt.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../c/phast.h"

typedef struct {
    mlt_producer parent;
    int clip; /* client handle, 0 when not open */
    phast_clip_info info;
} producer_phast_s;

/* One server per process, shared by every phast producer (a pool, a store, a governor). */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static phast_client *g_client;
static int g_users;

static phast_client *client_acquire(void) {
    pthread_mutex_lock(&g_lock);
    if (!g_client) {
        int rc = phast_spawn(&g_client, NULL);
        if (rc) mlt_log_error(NULL, "[producer phast] cannot start phast serve: %s\n",
                              phast_errmsg(NULL));
    }
    phast_client *c = g_client;
    if (c) g_users++;
    pthread_mutex_unlock(&g_lock);
    return c;
}

static void client_release(void) {
    pthread_mutex_lock(&g_lock);
    if (g_client && --g_users == 0) {
        phast_disconnect(g_client);
        g_client = NULL;
    }
    pthread_mutex_unlock(&g_lock);
}

static double profile_fps(mlt_producer producer) {
    mlt_profile p = mlt_service_profile(MLT_PRODUCER_SERVICE(producer));
    return p && p->frame_rate_den ? (double)p->frame_rate_num / p->frame_rate_den : 25.0;
}

/* The colour space avformat reports when a stream says nothing: by picture size. */
static int default_colorspace(const phast_clip_info *in) {
    return (long)in->width * in->height > 750000 ? 709 : 601;
}

static int is_420(const char *pix) {
    return !strcmp(pix, "yuv420p") || !strcmp(pix, "yuvj420p");
}

static int is_422(const char *pix) {
    return !strcmp(pix, "yuv422p") || !strcmp(pix, "yuvj422p");
}

static void set_properties(producer_phast_s *self) {
    mlt_properties p = MLT_PRODUCER_PROPERTIES(self->parent);
    const phast_clip_info *in = &self->info;
    double fps = profile_fps(self->parent);
    /* like avformat: the duration in the profile's frames */
    mlt_position frames = (mlt_position)lrint(in->duration * fps);
    if (frames < 1) frames = 1;
    mlt_properties_set_position(p, "length", frames);
    mlt_properties_set_position(p, "out", frames - 1);
    mlt_properties_set_int(p, "seekable", 1);
    mlt_properties_set_int(p, "width", in->width);
    mlt_properties_set_int(p, "height", in->height);
    mlt_properties_set_double(p, "aspect_ratio", 1.0); /* phast reports no sample aspect */
    mlt_properties_set_int(p, "progressive", 1);
    mlt_properties_set_int(p, "video_index", 0);
    mlt_properties_set_int(p, "audio_index", -1);
    int even = in->width % 2 == 0 && in->height % 2 == 0;
    mlt_properties_set_int(p, "format", even && is_420(in->pix_fmt) ? mlt_image_yuv420p
                                        : even && is_422(in->pix_fmt) ? mlt_image_yuv422
                                                                       : mlt_image_rgb);
    mlt_properties_set_int(p, "meta.media.nb_streams", 1);
    mlt_properties_set(p, "meta.media.0.stream.type", "video");
    mlt_properties_set_double(p, "meta.media.0.stream.frame_rate",
                              (double)in->rate_num / (double)in->rate_den);
    mlt_properties_set_double(p, "meta.media.0.stream.sample_aspect_ratio", 1.0);
    mlt_properties_set_int(p, "meta.media.0.codec.width", in->width);
    mlt_properties_set_int(p, "meta.media.0.codec.height", in->height);
    mlt_properties_set_int(p, "meta.media.0.codec.rotate", in->rotation);
    mlt_properties_set(p, "meta.media.0.codec.pix_fmt", in->pix_fmt);
    mlt_properties_set(p, "meta.media.0.codec.name", in->codec);
    mlt_properties_set_int(p, "meta.media.0.codec.colorspace", default_colorspace(in));
    mlt_properties_set_int(p, "meta.media.width", in->width);
    mlt_properties_set_int(p, "meta.media.height", in->height);
    mlt_properties_set_int(p, "meta.media.frame_rate_num", (int)in->rate_num);
    mlt_properties_set_int(p, "meta.media.frame_rate_den", (int)in->rate_den);
    mlt_properties_set_int(p, "meta.media.sample_aspect_num", 1);
    mlt_properties_set_int(p, "meta.media.sample_aspect_den", 1);
    mlt_properties_set_int(p, "meta.media.colorspace", default_colorspace(in));
    mlt_properties_set(p, "meta.media.color_range", in->pix_fmt[3] == 'j' ? "full" : "mpeg");
    mlt_properties_set_int(p, "meta.media.progressive", 1);
    mlt_properties_set_int(p, "meta.media.top_field_first", 0);
    if (in->is_vfr) mlt_properties_set_int(p, "meta.media.variable_frame_rate", 1);
    mlt_properties_set_int(p, "meta.media.phast.frame_count", (int)in->frame_count);
}

/* Seconds to wait for a frame: 0 = EXACT (block). */
static double deadline_for(producer_phast_s *self, mlt_frame frame) {
    mlt_properties p = MLT_PRODUCER_PROPERTIES(self->parent);
    const char *d = mlt_properties_get(p, "phast.deadline");
    if (d && *d) {
        double v = mlt_properties_get_double(p, "phast.deadline");
        return v > 0 ? v : 0;
    }
    mlt_consumer consumer = mlt_properties_get_data(MLT_FRAME_PROPERTIES(frame), "consumer", NULL);
    /* real_time <= 0 never drops a frame (a render; Shotcut renders with -N threads): EXACT */
    if (!consumer || mlt_properties_get_int(MLT_CONSUMER_PROPERTIES(consumer), "real_time") <= 0)
        return 0;
    return 1.0 / profile_fps(self->parent);
}

/* Copy a phast frame into an MLT image; 0 on success, -1 for a layout it does not take. */
static int to_image(const phast_frame *f, mlt_frame frame, uint8_t **buffer,
                    mlt_image_format *format, int *width, int *height) {
    int w = f->width, h = f->height;
    mlt_image_format fmt;
    if (f->n_planes == 3 && is_420(f->pix_fmt) && f->itemsize == 1 && w % 2 == 0 && h % 2 == 0)
        fmt = mlt_image_yuv420p;
    else if (f->n_planes == 3 && is_422(f->pix_fmt) && f->itemsize == 1 && w % 2 == 0)
        fmt = mlt_image_yuv422;
    else if (f->n_planes == 1 && !strcmp(f->pix_fmt, "gray") && w % 2 == 0 && h % 2 == 0)
        fmt = mlt_image_yuv420p; /* a BLANK native picture: luma, neutral chroma */
    else if (f->n_planes == 1 && !strcmp(f->pix_fmt, "rgb24"))
        fmt = mlt_image_rgb;
    else if (f->n_planes == 1 && !strcmp(f->pix_fmt, "rgba"))
        fmt = mlt_image_rgba;
    else
        return -1;
    int size = mlt_image_format_size(fmt, w, h, NULL);
    uint8_t *out = mlt_pool_alloc(size);
    if (!out) return -1;
    if (fmt == mlt_image_yuv420p) {
        uint8_t *dst = out;
        for (int r = 0; r < h; r++, dst += w)
            memcpy(dst, f->data[0] + (size_t)r * f->linesize[0], (size_t)w);
        for (int k = 1; k <= 2; k++)
            for (int r = 0; r < h / 2; r++, dst += w / 2) {
                if (f->n_planes == 3) memcpy(dst, f->data[k] + (size_t)r * f->linesize[k],
                                             (size_t)w / 2);
                else memset(dst, 128, (size_t)w / 2);
            }
    } else if (fmt == mlt_image_yuv422) {
        for (int r = 0; r < h; r++) {
            const uint8_t *y = f->data[0] + (size_t)r * f->linesize[0];
            const uint8_t *u = f->data[1] + (size_t)r * f->linesize[1];
            const uint8_t *v = f->data[2] + (size_t)r * f->linesize[2];
            uint8_t *dst = out + (size_t)r * w * 2;
            for (int x = 0; x < w / 2; x++) {
                dst[4 * x] = y[2 * x];
                dst[4 * x + 1] = u[x];
                dst[4 * x + 2] = y[2 * x + 1];
                dst[4 * x + 3] = v[x];
            }
        }
    } else {
        size_t row = (size_t)w * (fmt == mlt_image_rgb ? 3 : 4);
        for (int r = 0; r < h; r++)
            memcpy(out + r * row, f->data[0] + (size_t)r * f->linesize[0], row);
    }
    mlt_frame_set_image(frame, out, size, mlt_pool_release);
    *buffer = out;
    *format = fmt;
    *width = w;
    *height = h;
    return 0;
}

static const char *const QUALITY_NAMES[] = {"exact", "proxy", "nearest", "blank"};

static int get_image(mlt_frame frame, uint8_t **buffer, mlt_image_format *format, int *width,
                     int *height, int writable) {
    (void)writable; /* the image is a private copy either way */
    producer_phast_s *self = mlt_frame_pop_service(frame);
    mlt_properties fp = MLT_FRAME_PROPERTIES(frame);
    phast_client *c = g_client;
    if (!self->clip || !c) return 1;
    const phast_clip_info *in = &self->info;
    mlt_position pos = mlt_properties_get_position(fp, "original_position");
    double fps = profile_fps(self->parent);
    double deadline = deadline_for(self, frame);
    /* Packed formats when asked for them; the decoder's own planes otherwise. */
    const char *want = *format == mlt_image_rgb ? "rgb24"
                     : *format == mlt_image_rgba ? "rgba"
                     : mlt_properties_get_int(MLT_PRODUCER_PROPERTIES(self->parent), "format")
                           == mlt_image_rgb ? "rgb24" : "native";
    phast_frame f;
    int rc;
    int cfr_same_rate = !in->is_vfr && in->rate_num > 0 &&
                        fabs((double)in->rate_num / (double)in->rate_den - fps) < 1e-6 * fps;
    if (cfr_same_rate) {
        int64_t index = pos < 0 ? 0 : pos >= in->frame_count ? in->frame_count - 1 : pos;
        rc = phast_frame_get(c, self->clip, index, want, deadline, &f);
    } else {
        /* the frame on screen at the position's time (+0.1 us: a time computed for a frame's
         * start must not fall a rounding error before it) */
        double t = in->start_time + (pos < 0 ? 0 : (double)pos) / fps + 1e-7;
        rc = phast_frame_at(c, self->clip, t, want, deadline, &f);
        if (rc == PHAST_E_OUT_OF_RANGE) /* past the end: the last frame, as avformat */
            rc = phast_frame_get(c, self->clip, in->frame_count - 1, want, deadline, &f);
    }
    if (rc) {
        mlt_log_error(MLT_PRODUCER_SERVICE(self->parent), "frame at position %d: %s\n",
                      (int)pos, phast_errmsg(c));
        return 1;
    }
    if (to_image(&f, frame, buffer, format, width, height) < 0) {
        phast_release(c, &f);
        rc = phast_frame_get(c, self->clip, f.index, "rgb24", deadline, &f);
        if (rc || to_image(&f, frame, buffer, format, width, height) < 0) {
            if (!rc) phast_release(c, &f);
            return 1;
        }
    }
    mlt_properties_set(fp, "phast.quality", QUALITY_NAMES[f.quality]);
    mlt_properties_set_int64(fp, "phast.shows", f.shows);
    mlt_properties_set_int64(fp, "phast.index", f.index);
    phast_release(c, &f);
    mlt_properties_set_int(fp, "format", *format);
    mlt_properties_set_int(fp, "width", *width);
    mlt_properties_set_int(fp, "height", *height);
    mlt_properties_set_int(fp, "progressive", 1);
    mlt_properties_set_int(fp, "top_field_first", 0);
    mlt_properties_set_int(fp, "colorspace", default_colorspace(in));
    mlt_properties_set_int(fp, "full_range", in->pix_fmt[3] == 'j');
    return 0;
}

static int get_frame(mlt_producer producer, mlt_frame_ptr frame, int index) {
    (void)index;
    producer_phast_s *self = producer->child;
    *frame = mlt_frame_init(MLT_PRODUCER_SERVICE(producer));
    if (!*frame) return 1;
    mlt_properties fp = MLT_FRAME_PROPERTIES(*frame);
    mlt_frame_set_position(*frame, mlt_producer_position(producer));
    mlt_properties_set_position(fp, "original_position", mlt_producer_frame(producer));
    mlt_properties_set_int(fp, "width", self->info.width);
    mlt_properties_set_int(fp, "height", self->info.height);
    mlt_properties_set_double(fp, "aspect_ratio", 1.0);
    mlt_properties_set_int(fp, "progressive", 1);
    mlt_properties_set_int(fp, "colorspace", default_colorspace(&self->info));
    mlt_properties_set_int(fp, "format",
                           mlt_properties_get_int(MLT_PRODUCER_PROPERTIES(producer), "format"));
    mlt_frame_push_service(*frame, self);
    mlt_frame_push_get_image(*frame, get_image);
    mlt_producer_prepare_next(producer);
    return 0;
}

static void producer_close(mlt_producer producer) {
    producer_phast_s *self = producer->child;
    if (self->clip && g_client) phast_close(g_client, self->clip);
    client_release();
    producer->close = NULL;
    mlt_producer_close(producer);
    free(producer);
    free(self);
}

static mlt_producer producer_phast_init(mlt_profile profile, mlt_service_type type,
                                        const char *id, char *arg) {
    (void)type;
    (void)id;
    if (!arg || !*arg) return NULL;
    producer_phast_s *self = calloc(1, sizeof *self);
    mlt_producer producer = calloc(1, sizeof(struct mlt_producer_s));
    if (!self || !producer || mlt_producer_init(producer, self) != 0) {
        free(self);
        free(producer);
        return NULL;
    }
    self->parent = producer;
    mlt_service_set_profile(MLT_PRODUCER_SERVICE(producer), profile);
    mlt_properties_set(MLT_PRODUCER_PROPERTIES(producer), "resource", arg);
    phast_client *c = client_acquire();
    phast_open_options opts = {.stream = 0, .backend = NULL, .proxies = -1, .budget = NULL};
    if (!c || phast_open(c, arg, &opts, &self->clip) != PHAST_OK ||
        phast_info(c, self->clip, &self->info) != PHAST_OK) {
        if (c) mlt_log_error(NULL, "[producer phast] %s: %s\n", arg, phast_errmsg(c));
        if (c && self->clip) phast_close(c, self->clip);
        if (c) client_release();
        self->clip = 0;
        mlt_producer_close(producer);
        free(producer);
        free(self);
        return NULL;
    }
    set_properties(self);
    producer->get_frame = get_frame;
    producer->close = (mlt_destructor)producer_close;
    return producer;
}

MLT_REPOSITORY {
    MLT_REGISTER(mlt_service_producer_type, "phast", producer_phast_init);
}
