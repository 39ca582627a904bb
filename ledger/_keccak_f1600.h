/* One Keccak-f[1600] permutation, included by _keccak.c once per lane type:
 *
 *   #define KECCAK_NAME keccak_f1600_x4   the function's name
 *   #define KECCAK_T v4u64                one state lane: uint64_t, or a GCC
 *                                         vector of 4 or 8 lanes (4 or 8 states)
 *   #define KECCAK_ATTR AVX2              attributes (the SIMD target), or empty
 *   #include "_keccak_f1600.h"
 *
 * The state is s[x + 5y]; the 24 rounds have every step written out (theta,
 * rho and pi, chi, iota of FIPS 202 §3.2) with all 25 lanes in locals. Needs
 * ROL64 and ROUND_CONSTANTS from _keccak.c. No include guard: it is meant to be
 * included several times.
 */

KECCAK_ATTR static void KECCAK_NAME(KECCAK_T s[25]) {
    KECCAK_T a00 = s[0], a01 = s[1], a02 = s[2], a03 = s[3], a04 = s[4];
    KECCAK_T a05 = s[5], a06 = s[6], a07 = s[7], a08 = s[8], a09 = s[9];
    KECCAK_T a10 = s[10], a11 = s[11], a12 = s[12], a13 = s[13], a14 = s[14];
    KECCAK_T a15 = s[15], a16 = s[16], a17 = s[17], a18 = s[18], a19 = s[19];
    KECCAK_T a20 = s[20], a21 = s[21], a22 = s[22], a23 = s[23], a24 = s[24];
    KECCAK_T c0, c1, c2, c3, c4, d0, d1, d2, d3, d4;
    KECCAK_T b00, b01, b02, b03, b04;
    KECCAK_T b05, b06, b07, b08, b09;
    KECCAK_T b10, b11, b12, b13, b14;
    KECCAK_T b15, b16, b17, b18, b19;
    KECCAK_T b20, b21, b22, b23, b24;
    for (int round = 0; round < 24; ++round) {
        c0 = a00 ^ a05 ^ a10 ^ a15 ^ a20;
        c1 = a01 ^ a06 ^ a11 ^ a16 ^ a21;
        c2 = a02 ^ a07 ^ a12 ^ a17 ^ a22;
        c3 = a03 ^ a08 ^ a13 ^ a18 ^ a23;
        c4 = a04 ^ a09 ^ a14 ^ a19 ^ a24;
        d0 = c4 ^ ROL64(c1, 1);
        d1 = c0 ^ ROL64(c2, 1);
        d2 = c1 ^ ROL64(c3, 1);
        d3 = c2 ^ ROL64(c4, 1);
        d4 = c3 ^ ROL64(c0, 1);
        b00 = a00 ^ d0;
        b10 = ROL64(a01 ^ d1, 1);
        b20 = ROL64(a02 ^ d2, 62);
        b05 = ROL64(a03 ^ d3, 28);
        b15 = ROL64(a04 ^ d4, 27);
        b16 = ROL64(a05 ^ d0, 36);
        b01 = ROL64(a06 ^ d1, 44);
        b11 = ROL64(a07 ^ d2, 6);
        b21 = ROL64(a08 ^ d3, 55);
        b06 = ROL64(a09 ^ d4, 20);
        b07 = ROL64(a10 ^ d0, 3);
        b17 = ROL64(a11 ^ d1, 10);
        b02 = ROL64(a12 ^ d2, 43);
        b12 = ROL64(a13 ^ d3, 25);
        b22 = ROL64(a14 ^ d4, 39);
        b23 = ROL64(a15 ^ d0, 41);
        b08 = ROL64(a16 ^ d1, 45);
        b18 = ROL64(a17 ^ d2, 15);
        b03 = ROL64(a18 ^ d3, 21);
        b13 = ROL64(a19 ^ d4, 8);
        b14 = ROL64(a20 ^ d0, 18);
        b24 = ROL64(a21 ^ d1, 2);
        b09 = ROL64(a22 ^ d2, 61);
        b19 = ROL64(a23 ^ d3, 56);
        b04 = ROL64(a24 ^ d4, 14);
        a00 = b00 ^ (~b01 & b02);
        a01 = b01 ^ (~b02 & b03);
        a02 = b02 ^ (~b03 & b04);
        a03 = b03 ^ (~b04 & b00);
        a04 = b04 ^ (~b00 & b01);
        a05 = b05 ^ (~b06 & b07);
        a06 = b06 ^ (~b07 & b08);
        a07 = b07 ^ (~b08 & b09);
        a08 = b08 ^ (~b09 & b05);
        a09 = b09 ^ (~b05 & b06);
        a10 = b10 ^ (~b11 & b12);
        a11 = b11 ^ (~b12 & b13);
        a12 = b12 ^ (~b13 & b14);
        a13 = b13 ^ (~b14 & b10);
        a14 = b14 ^ (~b10 & b11);
        a15 = b15 ^ (~b16 & b17);
        a16 = b16 ^ (~b17 & b18);
        a17 = b17 ^ (~b18 & b19);
        a18 = b18 ^ (~b19 & b15);
        a19 = b19 ^ (~b15 & b16);
        a20 = b20 ^ (~b21 & b22);
        a21 = b21 ^ (~b22 & b23);
        a22 = b22 ^ (~b23 & b24);
        a23 = b23 ^ (~b24 & b20);
        a24 = b24 ^ (~b20 & b21);
        a00 ^= ROUND_CONSTANTS[round];
    }
    s[0] = a00; s[1] = a01; s[2] = a02; s[3] = a03; s[4] = a04;
    s[5] = a05; s[6] = a06; s[7] = a07; s[8] = a08; s[9] = a09;
    s[10] = a10; s[11] = a11; s[12] = a12; s[13] = a13; s[14] = a14;
    s[15] = a15; s[16] = a16; s[17] = a17; s[18] = a18; s[19] = a19;
    s[20] = a20; s[21] = a21; s[22] = a22; s[23] = a23; s[24] = a24;
}


#undef KECCAK_NAME
#undef KECCAK_T
#undef KECCAK_ATTR
