//! The seeded random stream tests and benches draw their data from.

/// Marsaglia's xorshift64: cheap and deterministic, good enough for test data (not for statistics).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// The stream for `seed`. The seed is multiplied by 2⁶⁴/φ so that neighbouring seeds start far apart,
    /// and made odd because an all-zero state would stay zero.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in 0..n (by remainder: the slight bias towards small values does not matter here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [-1, 1), on a grid of 2⁻²³.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `len` values of [`Rng::unit`].
    pub fn units(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.unit()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    /// The stream the tests' data was drawn from before it moved here (xorshift64 by hand in Python:
    /// s ^= s << 13; s ^= s >> 7; s ^= s << 17, mod 2⁶⁴, from 0x9E3779B97F4A7C15).
    #[test]
    fn stream_is_xorshift64_from_the_mixed_seed() {
        let mut r = Rng::new(1);
        assert_eq!(
            [r.next_u64(), r.next_u64(), r.next_u64()],
            [0xdc1b77ae0bf34dad, 0x64f0eeb9026e6076, 0x7b07ce91e5906136]
        );
        let mut r = Rng::new(7);
        r.next_u64();
        assert_eq!(r.unit(), 15_519_465.0 / (1u64 << 23) as f32 - 1.0);
    }
}
