/* phast.h -- C client of `phast serve` (C11, libc only).
 *
 * Copy phast.h and phast.c into your program (or build them as a library); no other code is
 * needed. The wire protocol is specified in docs/protocol.md; this header is the API reference.
 *
 * OVERVIEW
 *
 *   phast_client *c;
 *   if (phast_spawn(&c, NULL) != PHAST_OK) ...             // `phast serve` as our child
 *   int clip;
 *   if (phast_open(c, "/media/clip.mp4", NULL, &clip) != PHAST_OK)
 *       fprintf(stderr, "%s\n", phast_errmsg(c));
 *   phast_frame f;
 *   if (phast_frame_get(c, clip, 120, "native", 0.0, &f) == PHAST_OK) {  // blocking, EXACT
 *       ... f.data[0..f.n_planes-1], f.linesize[], f.rows[], f.row_bytes[] ...
 *       phast_release(c, &f);
 *   }
 *   phast_frame_get(c, clip, 121, "rgb24", 1.0 / 25, &f); // answers within 40 ms: f.quality
 *   phast_close(c, clip);
 *   phast_disconnect(c);
 *
 * ERRORS
 *   Every function returning int returns PHAST_OK (0) or a negative phast_error code;
 *   phast_errmsg(client) gives the message of the last failed call on that client (valid until
 *   the next call), phast_strerror(code) a fixed description of a code. Nothing the server
 *   sends can crash the client: every length, count, offset and field is checked, allocations
 *   are bounded, and a server that breaks the protocol gets PHAST_E_PROTOCOL (the connection
 *   is then dropped, and a spawned server restarted on the next call).
 *
 * SERVER CRASHES
 *   A spawned server that dies (or breaks the protocol, or does not answer in time) is
 *   restarted on the next call, which reopens every open clip (same handles) and retries the
 *   request once: the caller sees one slower answer, not an error. Frames obtained from the
 *   old server stay readable until released. A connected (shared) server is reconnected once
 *   at the same path; when nobody answers there, the call fails with PHAST_E_IO.
 *
 * THREADS
 *   A client is safe to use from several threads (one mutex; calls are serialised). Frames may
 *   be released from any thread.
 *
 * MEMORY
 *   Frame pixels live in shared memory mapped read-only; they stay valid until
 *   phast_release(), even across server restarts and phast_close() of their clip. Release
 *   every frame (the server holds at most `max_leases`, 64, per client: PHAST_E_LIMIT beyond).
 *   phast_disconnect() releases the rest.
 */
#ifndef PHAST_H
#define PHAST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Error codes (negative), as returned by every int function. */
typedef enum phast_error {
    PHAST_OK = 0,
    PHAST_E_INVALID = -1,      /**< a bad argument (also the server's INVALID, BAD_REQUEST) */
    PHAST_E_IO = -2,           /**< the connection failed and could not be re-established */
    PHAST_E_PROTOCOL = -3,     /**< the server sent something the protocol does not allow */
    PHAST_E_VERSION = -4,      /**< the server speaks another protocol version */
    PHAST_E_PERMISSION = -5,   /**< the server refused this user */
    PHAST_E_NOT_FOUND = -6,    /**< no such media file */
    PHAST_E_MEDIA = -7,        /**< not a usable video (no video stream, unsupported codec) */
    PHAST_E_DECODE = -8,       /**< this frame cannot be decoded (damaged source) */
    PHAST_E_OUT_OF_RANGE = -9, /**< no such frame index or time */
    PHAST_E_QUARANTINED = -10, /**< this frame crashed decoders twice */
    PHAST_E_LIMIT = -11,       /**< too many leased frames or open clips */
    PHAST_E_NO_CLIP = -12,     /**< no such clip handle */
    PHAST_E_BACKEND = -13,     /**< the named backend does not exist or cannot run */
    PHAST_E_WORKER = -14,      /**< a decoder worker failed and could not recover */
    PHAST_E_INTERNAL = -15,    /**< any other server-side failure */
    PHAST_E_NOMEM = -16,       /**< out of memory in the client */
    PHAST_E_TIMEOUT = -17,     /**< no answer within the client's timeout */
    PHAST_E_SPAWN = -18        /**< the server could not be started */
} phast_error;

/** How faithful a frame is (docs/protocol.md "Deadlines and tiers"). */
typedef enum phast_quality {
    PHAST_EXACT = 0,   /**< the frame itself, bit-exact with a sequential decode */
    PHAST_PROXY = 1,   /**< the frame, downscaled (width/height say to what) */
    PHAST_NEAREST = 2, /**< another frame's picture: `shows` says which */
    PHAST_BLANK = 3    /**< zeros: nothing near enough was available in time */
} phast_quality;

typedef struct phast_client phast_client;

/** What phast_info() reports about a clip. Times in seconds on the stream clock. */
typedef struct phast_clip_info {
    int width, height;         /**< coded size of frame 0 */
    int bit_depth;
    int rotation;              /**< display rotation in degrees (metadata only) */
    int is_vfr;                /**< 1 for variable frame rate */
    int64_t frame_count;       /**< frames of a sequential decode, display order */
    int64_t keyframe_count;
    int64_t rate_num, rate_den;   /**< average frame rate */
    int64_t tb_num, tb_den;       /**< time base of pts */
    double start_time;         /**< time of frame 0 */
    double duration;           /**< from frame 0 to the end of the last frame */
    char codec[32];
    char pix_fmt[32];          /**< decoder pixel format ("yuv420p"...) */
    char backend[32];
    char index_method[16];
} phast_clip_info;

/** Options of phast_open(); NULL means all defaults. */
typedef struct phast_open_options {
    int stream;             /**< video stream number (0 = first) */
    const char *backend;    /**< backend name, NULL = "auto" */
    int proxies;            /**< -1 = server default, 0 = off, 1 = build proxies */
    const char *budget;     /**< power budget share ("0.1") or "off"; NULL = default */
} phast_open_options;

/** One frame. The public fields are read-only; pass the struct back to phast_release(). */
typedef struct phast_frame {
    int n_planes;                 /**< 1 for packed formats; the decoder's planes for native */
    const uint8_t *data[4];       /**< first byte of each plane (read-only memory) */
    int linesize[4];              /**< bytes from a row to the next */
    int rows[4];                  /**< rows of each plane */
    int row_bytes[4];             /**< bytes of pixels in each row (<= linesize) */
    int width, height;            /**< picture size (a PROXY or BLANK picture is smaller) */
    int itemsize;                 /**< bytes per sample: 1, or 2 for 16-bit formats */
    char format[16];              /**< the format asked for */
    char pix_fmt[32];             /**< the data's pixel format ("yuv420p", "rgb24"...) */
    phast_quality quality;
    int64_t index;                /**< the frame asked for (always) */
    int64_t shows;                /**< the frame whose pixels these are (-1: BLANK) */
    int64_t pts;                  /**< pts of `index`, in time_base units */
    double time;                  /**< seconds of `index` on the stream clock */
    int key_frame;
    /* private */
    uint64_t lease_;
    unsigned generation_;
    int slot_;
} phast_frame;

/** A refinement notification: the EXACT frame behind a lower-tier answer is now ready. */
typedef struct phast_event {
    int clip;
    int64_t index;
    char format[16];
} phast_event;

/** Start `phast serve --fd 3` as a child over a socketpair and handshake.
 *  argv: the command to run before "serve --fd 3" (e.g. {"/venv/bin/phast", NULL}); NULL
 *  means $PHAST_SERVE_COMMAND (split on spaces) if set, else "phast" from PATH.
 *  The server exits when the client disconnects. */
int phast_spawn(phast_client **out, const char *const *argv);

/** Connect to a shared server at `path` (NULL: $XDG_RUNTIME_DIR/phast/serve.sock) and
 *  handshake. */
int phast_connect(phast_client **out, const char *path);

/** Release every frame, close every clip, end the connection (and reap a spawned server).
 *  Frames still held become invalid. NULL is allowed. */
void phast_disconnect(phast_client *c);

/** Seconds to wait for any one answer (default 120; an open scans the file once). */
void phast_set_timeout(phast_client *c, double seconds);

/** Message of the last failed call on this client; with NULL, why the last phast_spawn() or
 *  phast_connect() of this thread failed. Never NULL. */
const char *phast_errmsg(const phast_client *c);

/** Fixed description of an error code. Never NULL. */
const char *phast_strerror(int code);

/** Process id of the server (0 if not known). */
int phast_server_pid(const phast_client *c);

/** How many times a spawned server was restarted after dying. */
int phast_restarts(const phast_client *c);

/** Open a media file (its path is made absolute, and must be valid UTF-8). */
int phast_open(phast_client *c, const char *path, const phast_open_options *options,
               int *clip_out);

/** Describe an open clip. */
int phast_info(phast_client *c, int clip, phast_clip_info *out);

/** Frame `index` (display order; negative counts from the end) in `format` ("native",
 *  "rgb24", "rgba", "bgr24", "bgra", "gray", "gray16le", "rgb48le").
 *  deadline <= 0: block for the EXACT frame. deadline > 0: answer within that many seconds
 *  with the best tier available (see phast_quality). On success fill `out` (release it). */
int phast_frame_get(phast_client *c, int clip, int64_t index, const char *format,
                    double deadline, phast_frame *out);

/** Like phast_frame_get() for the frame shown at `seconds` (stream clock, as phast_frame.time). */
int phast_frame_at(phast_client *c, int clip, double seconds, const char *format,
                   double deadline, phast_frame *out);

/** As phast_frame_get() with a deadline, and ask to be told (phast_next_event) when the EXACT
 *  frame is ready if the answer was not EXACT. */
int phast_frame_notify(phast_client *c, int clip, int64_t index, const char *format,
                       double deadline, phast_frame *out);

/** Pop one refinement notification received so far: 1 if `ev` was filled, 0 if none. */
int phast_next_event(phast_client *c, phast_event *ev);

/** Give a frame back (its memory is no longer readable). Safe on a zeroed or released frame. */
int phast_release(phast_client *c, phast_frame *f);

/** Close a clip (its frames stay valid until released). */
int phast_close(phast_client *c, int clip);

/** One request with no work: the protocol's round trip (for measurements). */
int phast_ping(phast_client *c);

#ifdef __cplusplus
}
#endif
#endif /* PHAST_H */
