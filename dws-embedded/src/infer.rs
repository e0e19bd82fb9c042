//! What the runner needs from a model.

use dws_core::Model;

/// A model that runs one input at a time into caller-provided buffers.
///
/// This is the contract of [`dws_core::Model`]; a model of another element
/// type (int8) with the same contract drops into [`crate::Runner`] unchanged.
pub trait Infer {
    /// f32 elements of one input.
    fn input_len(&self) -> usize;
    /// f32 elements of one output.
    fn output_len(&self) -> usize;
    /// f32 elements of scratch one inference needs.
    fn scratch_len(&self) -> usize;
    /// Runs `input`, returns the written part of `output`.
    fn infer<'o>(
        &self,
        input: &[f32],
        scratch: &mut [f32],
        output: &'o mut [f32],
    ) -> Result<&'o [f32], dws_core::Error>;
}

impl Infer for Model<'_> {
    fn input_len(&self) -> usize {
        Model::input_len(self)
    }
    fn output_len(&self) -> usize {
        Model::output_len(self)
    }
    fn scratch_len(&self) -> usize {
        Model::scratch_len(self)
    }
    fn infer<'o>(
        &self,
        input: &[f32],
        scratch: &mut [f32],
        output: &'o mut [f32],
    ) -> Result<&'o [f32], dws_core::Error> {
        self.run(input, scratch, output)
    }
}

impl<M: Infer + ?Sized> Infer for &M {
    fn input_len(&self) -> usize {
        (**self).input_len()
    }
    fn output_len(&self) -> usize {
        (**self).output_len()
    }
    fn scratch_len(&self) -> usize {
        (**self).scratch_len()
    }
    fn infer<'o>(
        &self,
        input: &[f32],
        scratch: &mut [f32],
        output: &'o mut [f32],
    ) -> Result<&'o [f32], dws_core::Error> {
        (**self).infer(input, scratch, output)
    }
}
