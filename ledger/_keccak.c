/* ledger._keccak: Keccak-256 (the EVM's, not NIST SHA3-256) over a whole Merkle
 * tree in one call, so building a tree costs the permutation and not a Python
 * call per node.
 *
 *   tree(leaves: bytes, width: int = 0) -> tuple[bytes, ...]
 *       leaves = l0 ‖ l1 ‖ … (n of 32 bytes each, n >= 1); returns the 2n - 1
 *       nodes of @openzeppelin/merkle-tree's flat array (root first), each
 *       internal node keccak(min(a, b) ‖ max(a, b)) of its children: the
 *       commutative node hash of OpenZeppelin 5's MerkleProof. Independent
 *       nodes are hashed 8 (AVX-512F) or 4 (AVX2) at a time, one per SIMD lane;
 *       width picks 1, 4 or 8 (0, the default: SIMD_WIDTH, the widest here).
 *   keccak256(data: bytes) -> bytes
 *       one digest of any length (absorbs 136-byte blocks).
 *
 * The permutation follows the Keccak reference (FIPS 202 §3.2 step mappings,
 * with the original Keccak padding 0x01 … 0x80). The GIL is released while the
 * tree is hashed. Written for this project; tested against eth-hash.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define RATE 136 /* bytes absorbed per permutation for a 256-bit output */
#define NODE 32
#define ROL64(v, n) (((v) << (n)) | ((v) >> (64 - (n))))

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define VEILX_SIMD 1
#else
#define VEILX_SIMD 0
#endif

static const uint64_t ROUND_CONSTANTS[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808AULL,
    0x8000000080008000ULL, 0x000000000000808BULL, 0x0000000080000001ULL,
    0x8000000080008081ULL, 0x8000000000008009ULL, 0x000000000000008AULL,
    0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000AULL,
    0x000000008000808BULL, 0x800000000000008BULL, 0x8000000000008089ULL,
    0x8000000000008003ULL, 0x8000000000008002ULL, 0x8000000000000080ULL,
    0x000000000000800AULL, 0x800000008000000AULL, 0x8000000080008081ULL,
    0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};

/* Keccak-f[1600]: one state (uint64_t), or 4 or 8 states side by side in SIMD
   lanes (GCC vector types, compiled for AVX2 / AVX-512 and chosen at run time);
   the one body is _keccak_f1600.h. */
#define KECCAK_NAME keccak_f1600
#define KECCAK_T uint64_t
#define KECCAK_ATTR
#include "_keccak_f1600.h"

#if VEILX_SIMD
typedef uint64_t v4u64 __attribute__((vector_size(32)));
typedef uint64_t v8u64 __attribute__((vector_size(64)));
#define AVX2 __attribute__((target("avx2")))
#define AVX512 __attribute__((target("avx512f")))

#define KECCAK_NAME keccak_f1600_x4
#define KECCAK_T v4u64
#define KECCAK_ATTR AVX2
#include "_keccak_f1600.h"

#define KECCAK_NAME keccak_f1600_x8
#define KECCAK_T v8u64
#define KECCAK_ATTR AVX512
#include "_keccak_f1600.h"
#endif

static inline uint64_t load64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

static inline void store64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; ++i) p[i] = (unsigned char)(v >> (8 * i));
}

/* keccak(a ‖ b) for two 32-byte nodes: one block, so load, pad, permute, squeeze */
static void keccak_pair(const unsigned char *a, const unsigned char *b,
                        unsigned char *out) {
    uint64_t s[25] = {0};
    for (int i = 0; i < 4; ++i) s[i] = load64(a + 8 * i);
    for (int i = 0; i < 4; ++i) s[4 + i] = load64(b + 8 * i);
    s[8] = 0x01;                        /* the padding's first bit, after 64 bytes */
    s[16] = 0x8000000000000000ULL;      /* and its last, at byte RATE - 1 */
    keccak_f1600(s);
    for (int i = 0; i < 4; ++i) store64(out + 8 * i, s[i]);
}

static void keccak_any(const unsigned char *data, Py_ssize_t len,
                       unsigned char *out) {
    uint64_t s[25] = {0};
    unsigned char last[RATE];
    while (len >= RATE) {
        for (int i = 0; i < RATE / 8; ++i) s[i] ^= load64(data + 8 * i);
        keccak_f1600(s);
        data += RATE;
        len -= RATE;
    }
    memset(last, 0, RATE);
    memcpy(last, data, (size_t)len);
    last[len] ^= 0x01;
    last[RATE - 1] ^= 0x80;
    for (int i = 0; i < RATE / 8; ++i) s[i] ^= load64(last + 8 * i);
    keccak_f1600(s);
    for (int i = 0; i < 4; ++i) store64(out + 8 * i, s[i]);
}

/* the two children of internal node i, smaller first */
static inline void children(const unsigned char *nodes, Py_ssize_t i,
                            const unsigned char **lo, const unsigned char **hi) {
    const unsigned char *a = nodes + NODE * (2 * i + 1), *b = a + NODE;
    int a_first = memcmp(a, b, NODE) <= 0;
    *lo = a_first ? a : b;
    *hi = a_first ? b : a;
}

#if VEILX_SIMD
/* W = 4 or 8 internal nodes i, i - 1, …, i - W + 1 at once, one per SIMD lane */
#define HASH_NODES(NAME, T, W, PERM, ATTR)                                     \
    ATTR static void NAME(unsigned char *nodes, Py_ssize_t i) {                 \
        T s[25];                                                                \
        memset(s, 0, sizeof s);                                                 \
        for (int p = 0; p < W; ++p) {                                           \
            const unsigned char *lo, *hi;                                       \
            children(nodes, i - p, &lo, &hi);                                   \
            for (int j = 0; j < 4; ++j) {                                       \
                s[j][p] = load64(lo + 8 * j);                                   \
                s[4 + j][p] = load64(hi + 8 * j);                               \
            }                                                                   \
            s[8][p] = 0x01;                                                     \
            s[16][p] = 0x8000000000000000ULL;                                   \
        }                                                                       \
        PERM(s);                                                                \
        for (int p = 0; p < W; ++p)                                             \
            for (int j = 0; j < 4; ++j)                                         \
                store64(nodes + NODE * (i - p) + 8 * j, s[j][p]);               \
    }
HASH_NODES(hash_nodes_x4, v4u64, 4, keccak_f1600_x4, AVX2)
HASH_NODES(hash_nodes_x8, v8u64, 8, keccak_f1600_x8, AVX512)
#endif

static int simd_width = 1; /* 8 with AVX-512F, 4 with AVX2, else 1: set at import */

/* The tree of @openzeppelin/merkle-tree over n leaves, as its flat array of
 * 2n - 1 nodes: leaf k at 2n - 2 - k, and node i (i = n - 2 … 0) the sorted-pair
 * hash of its children 2i + 1 and 2i + 2. Nodes are computed from i = n - 2
 * down, so children always come first; W nodes i … i - W + 1 go side by side
 * while their lowest child, 2(i - W + 1) + 1, is above i (i > 2W - 3). */
static void build_tree(const unsigned char *leaves, unsigned char *nodes,
                       Py_ssize_t n, int width) {
    for (Py_ssize_t k = 0; k < n; ++k)
        memcpy(nodes + NODE * (2 * n - 2 - k), leaves + NODE * k, NODE);
    Py_ssize_t i = n - 2;
#if VEILX_SIMD
    if (width == 8)
        for (; i > 2 * 8 - 3; i -= 8) hash_nodes_x8(nodes, i);
    if (width >= 4)
        for (; i > 2 * 4 - 3; i -= 4) hash_nodes_x4(nodes, i);
#endif
    for (; i >= 0; --i) {
        const unsigned char *lo, *hi;
        children(nodes, i, &lo, &hi);
        keccak_pair(lo, hi, nodes + NODE * i);
    }
}

static PyObject *py_tree(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    int width = 0;
    if (!PyArg_ParseTuple(args, "y*|i:tree", &view, &width)) return NULL;
    if (width == 0) width = simd_width;
    if (width != 1 && width != 4 && width != 8) {
        PyErr_Format(PyExc_ValueError, "width must be 1, 4 or 8, got %d", width);
        PyBuffer_Release(&view);
        return NULL;
    }
    if (width > simd_width) {
        PyErr_Format(PyExc_ValueError,
                     "width %d is not supported by this CPU (at most %d)", width,
                     simd_width);
        PyBuffer_Release(&view);
        return NULL;
    }
    if (view.len == 0 || view.len % NODE != 0) {
        PyErr_Format(PyExc_ValueError,
                     "leaves must be a positive multiple of %d bytes, got %zd",
                     NODE, view.len);
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t n = view.len / NODE, total = 2 * n - 1;
    unsigned char *nodes = PyMem_RawMalloc((size_t)total * NODE);
    if (nodes == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    const unsigned char *in = (const unsigned char *)view.buf;
    Py_BEGIN_ALLOW_THREADS build_tree(in, nodes, n, width);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyObject *result = PyTuple_New(total);
    for (Py_ssize_t i = 0; result != NULL && i < total; ++i) {
        PyObject *node =
            PyBytes_FromStringAndSize((const char *)nodes + NODE * i, NODE);
        if (node == NULL) Py_CLEAR(result);
        else PyTuple_SET_ITEM(result, i, node);
    }
    PyMem_RawFree(nodes);
    return result;
}

static PyObject *py_keccak256(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    unsigned char out[NODE];
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    keccak_any((const unsigned char *)view.buf, view.len, out);
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)out, NODE);
}

static PyMethodDef methods[] = {
    {"tree", py_tree, METH_VARARGS,
     "tree(leaves, width=0) -> tuple[bytes, ...]: the 2n - 1 nodes of the tree over\n"
     "n leaves; width 1, 4 or 8 hashes that many nodes at once (0: the widest\n"
     "this CPU supports, SIMD_WIDTH)."},
    {"keccak256", py_keccak256, METH_O,
     "keccak256(data) -> bytes: the EVM's Keccak-256 of data."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ledger._keccak",
    "Keccak-256 over a whole Merkle tree (C, GIL released).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__keccak(void) {
#if VEILX_SIMD
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) simd_width = 8;
    else if (__builtin_cpu_supports("avx2")) simd_width = 4;
#endif
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "SIMD_WIDTH", simd_width) < 0)
        Py_CLEAR(m);
    return m;
}
