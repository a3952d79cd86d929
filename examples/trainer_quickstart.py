"""A complete run of mia_guard with a Hugging Face Trainer that memorizes visibly (CPU: about 250 s
of CPU time, measured on a shared 2-core machine; 430 s wall there).

Plants 128 credential canaries in some training text, trains a tiny GPT-2 and audits
it every 100 steps. Afterwards:

    tensorboard --logdir quickstart_out/runs      # training loss + mia/... leakage curves
    cat quickstart_out/mia/report.md              # the final report
    mia-guard gate quickstart_out/mia/report.json --policy mia_guard/data/release_policy.toml
"""

from transformers import Trainer, TrainingArguments

from mia_guard import CanarySet
from mia_guard.callbacks import MIAAuditCallback
from mia_guard.experiments.demo_assets import CausalLMCollator, byte_tokenizer, stdlib_corpus, tiny_gpt2, tokenize

tokenizer = byte_tokenizer()
canaries = CanarySet.generate(128, "code_credential", seed=0)  # about half become members
texts = canaries.insert_into(stdlib_corpus(max_chars=1000 * 120), repetitions=8)
audit = MIAAuditCallback(canaries, every_n_steps=100)  # writes to quickstart_out/mia and .../runs

trainer = Trainer(
    model=tiny_gpt2(),
    args=TrainingArguments(
        output_dir="quickstart_out", max_steps=300, per_device_train_batch_size=16, learning_rate=3e-3,
        report_to="tensorboard", logging_steps=20, save_strategy="no", use_cpu=True,
    ),
    train_dataset=tokenize(texts, tokenizer, max_length=128),
    data_collator=CausalLMCollator(),
    processing_class=tokenizer,
    callbacks=[audit],
)
trainer.train()
print(audit.history.last.table())
