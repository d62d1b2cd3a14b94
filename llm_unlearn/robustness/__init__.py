"""Is it really gone? Attacks on an unlearned model (``llm-unlearn attack``) and sequential unlearning requests.

Forget quality, ROUGE and membership inference measure the model as it is handed over. The attacks here measure
what a user can get back from it afterwards, and the same attack on the retrained reference measures what plain
learning gives, so that a method that hides knowledge cannot pass for one that removes it:

- **relearn**: a few fine-tuning steps on a small part of the forget split (or on retain items about related
  entities), then the forget measures on the untouched rest (:func:`.attacks.relearn`);
- **quantize**: weight-only 8- and 4-bit round trips through optimum-quanto (:func:`.attacks.quantize_weights`);
- **rephrase**: the forget questions asked in other words and after a few retain examples
  (:func:`.attacks.rephrase_probes`).

Each reports the forget probability, ROUGE-L recall and truth-ratio forget quality before and after, and the
**recovery**: the fraction of the gap between the unlearned model and the untouched target that the attack wins
back (see :func:`.attacks.recovery`).
"""
